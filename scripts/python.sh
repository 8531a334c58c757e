# Sourced by scripts that run Python tools needing 3.12 or newer (helm-sdkpy; hypothesis under
# schemathesis trips over Python 3.11.7's ast module). Defines find_python, which prints such an
# interpreter, preferring pyenv's, or fails saying how to get one.

find_python() {
  local root="" candidate
  command -v pyenv >/dev/null 2>&1 && root="$(pyenv root)"
  for candidate in ${root:+$root/versions/3.13*/bin/python3 $root/versions/3.12*/bin/python3} python3.13 python3.12 python3; do
    candidate="$(command -v "$candidate" 2>/dev/null || true)"
    [[ -n "$candidate" ]] || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 12) else 1)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "no Python 3.12 or 3.13 found: install one (pyenv install 3.13)" >&2
  return 1
}
