# A local stand-in for localstack/localstack:4.14, for machines that cannot pull it
# (scripts/check-docker.sh builds it). It runs the same LocalStack release from PyPI that the
# tests use (scripts/localstack.sh pins), with LocalStack's own entry point, so that its init hooks
# (/etc/localstack/init/ready.d), /_localstack/init/ready and the S3 API behave as in the real
# image; awslocal comes from PyPI (awscli-local) as it does there. Python 3.13 is this machine's
# own build, copied at the path it was built for. Users with a registry pull the real image.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 libffi8 \
        libsqlite3-0 zlib1g libbz2-1.0 liblzma5 libreadline8 libncursesw6 libuuid1 \
    && rm -rf /var/lib/apt/lists/*
COPY host-ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ARG PYTHON_HOME
COPY python ${PYTHON_HOME}
ARG LOCALSTACK_PINS
RUN ${PYTHON_HOME}/bin/python3 -m venv /opt/localstack \
    && /opt/localstack/bin/pip install --no-cache-dir --quiet ${LOCALSTACK_PINS} \
    && ${PYTHON_HOME}/bin/python3 -m venv /opt/awslocal \
    && /opt/awslocal/bin/pip install --no-cache-dir --quiet awscli-local awscli \
    && ln -s /opt/awslocal/bin/awslocal /opt/awslocal/bin/aws /usr/local/bin/ \
    && mkdir -p /etc/localstack/init/ready.d /var/lib/localstack
ENV SERVICES=s3 GATEWAY_LISTEN=0.0.0.0:4566
EXPOSE 4566
CMD ["/opt/localstack/bin/python", "-m", "localstack.runtime.main"]
