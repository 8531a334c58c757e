//! Released migrations stay as they were released.

/// sqlx keeps the checksum of every migration it applied and refuses to open a database
/// whose applied migration has since changed: a schema change is a new migration, never an
/// edit of a released one (add the new one's checksum here when it is released).
#[test]
fn released_migrations_are_never_edited() {
    let released = [
        (
            1,
            "b55ebde664ba0a54761de8cd898fd50888e9db5a2801056ea7963d8db6fd03b962759a7152fea5e9bd726d3b6bc8a706",
        ),
        (
            2,
            "c13562e9c9a76c7690b7c4ff599caa46a94e6bedcc5d767863cd03e655ef56fb7321e67972e947f1814de61390c48619",
        ),
        (
            3,
            "9e7d559b5d97205cfd95768baf5cac1686e0542bc5f285c727b928f90484b5782d5c1bdd81d2e2ed1afb5650c21a8e64",
        ),
        (
            4,
            "6a1ab1d53511527a3d94b5c2621d62a2e51c3bda5687aa22570684015a507835002481b00a0f2bd3f422a8baa536a6ac",
        ),
        (
            5,
            "21bb386283225f5d2c3a031ac6105e474772d4bbb9c079e528c3549312dd39187b8edf4d40b420dd5281b21907bfbd8a",
        ),
        (
            6,
            "767c32b0cc8aea01a74fb249b2e7a53869efdeb93dc6143cc622f7ffaad536479b6e2b21dc4cb41c8c9e0b456664d267",
        ),
        (
            7,
            "42621f9c1e960e9ec70d14b33271629cb813b6b6c44bde578c9d5f2d989ee27d5b317bc6ded6e0fb41022338d33270da",
        ),
        (
            8,
            "b5098ba05fe86ba45d7e35b0a576121a6bc7f0364b50509cd59cffe2e35e716efda5b93aa17096a6bd86fca9ed114910",
        ),
    ];
    let migrator = sqlx::migrate!("./migrations");
    for (version, checksum) in released {
        let migration = migrator
            .iter()
            .find(|m| m.version == version)
            .expect("a released migration was removed");
        let hex: String = migration
            .checksum
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex, checksum,
            "migration {version} was edited: add a new one instead"
        );
    }
}
