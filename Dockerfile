# syntax=docker/dockerfile:1
# One image for every certfleet role; the command picks the role:
#   celery -A workers.app worker -Q control,push,scan --loglevel=INFO
#   celery -A workers.app beat --loglevel=INFO
#   celery -A workers.app flower --address=0.0.0.0 --port=5555 --basic-auth=USER:PASSWORD
#   certfleet listener
#   certfleet api --host 0.0.0.0 --port 8080
#   certfleet rollout status ID   (and every other CLI command)
# deploy/compose.yaml and deploy/k8s/ run it so; settings come from CERTFLEET_* variables.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/certfleet/.venv
# Only what the package needs (see .dockerignore): no tests, no dev dependencies.
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY simulator ./simulator
RUN /opt/certfleet/.venv/bin/pip install --upgrade pip \
 && /opt/certfleet/.venv/bin/pip install . \
 && /opt/certfleet/.venv/bin/certfleet --help >/dev/null

FROM python:3.11-slim
LABEL org.opencontainers.image.title="certfleet" \
      org.opencontainers.image.description="Fleet-wide CA certificate rotation for nRF9160 devices over MQTT" \
      org.opencontainers.image.licenses="Apache-2.0"
# The same venv path as the systemd units (deploy/systemd/), so commands read alike.
COPY --from=build /opt/certfleet/.venv /opt/certfleet/.venv
# A fixed non-root uid: a file handed in (the token PIN file; a development key) must be owned by it (mode 0600).
RUN groupadd --system --gid 10001 certfleet \
 && useradd --system --uid 10001 --gid certfleet --home-dir /home/certfleet --create-home \
      --shell /usr/sbin/nologin certfleet
# The PKCS#11 module that reaches the root key's token through `p11-kit server` on the
# host (CERTFLEET_PKCS11_MODULE; docs/operations.md, "Signing keys"), at one path on every architecture.
RUN apt-get update \
 && apt-get install -y --no-install-recommends p11-kit-modules \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(dpkg -L p11-kit-modules | grep '/pkcs11/p11-kit-client\.so$')" /usr/local/lib/p11-kit-client.so
ENV PATH=/opt/certfleet/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CERTFLEET_LOG_FORMAT=json
USER 10001:10001
WORKDIR /home/certfleet
EXPOSE 8080 5555
CMD ["certfleet", "--help"]
