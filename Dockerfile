# syntax=docker/dockerfile:1
# One image for all of correo: the operator (the default command) and the
# services it renders, which run `correo serve relay|queue|mailstore --config /etc/correo`.
#
#   docker build -t correo .                                     # python:3.11-slim
#   docker build --build-arg BASE_IMAGE=python:3.12-slim -t correo .
#   scripts/build-image                                          # buildah, no daemon, no registry
#
# It runs as an unprivileged user (uid 10001, the uid the rendered pods ask
# for) and writes nothing outside its volumes and /tmp, so it works with
# readOnlyRootFilesystem: byte code is compiled at build time.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY crds/ crds/
COPY server/ server/
COPY operator/ operator/
# An optional build secret "pip-ca" (a CA bundle) is trusted for fetching packages,
# for networks whose proxy re-signs TLS; it is mounted for this step only, never
# stored in the image (scripts/build-image passes the host's bundle).
RUN --mount=type=secret,id=pip-ca \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
 && python -m venv /opt/correo \
 && /opt/correo/bin/pip install --upgrade pip \
 && /opt/correo/bin/pip install . \
 && /opt/correo/bin/python -m compileall -q /opt/correo/lib \
 && /opt/correo/bin/correo --version

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="correo" \
      org.opencontainers.image.description="A declarative, Kubernetes-native mail stack: operator, SMTP relay, queue, IMAP/POP3 mailstore" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --from=build /opt/correo /opt/correo
RUN groupadd --system --gid 10001 correo \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin correo \
 && mkdir -p /etc/correo /var/lib/correo/queue /var/lib/correo/mail \
 && chown -R 10001:10001 /var/lib/correo
ENV PATH=/opt/correo/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
# SMTP, submission, SMTPS; IMAP, IMAPS, POP3, POP3S; LMTP (queue, mailstore);
# HTTP side ports (operator 8080, relay 8081, queue 8082, mailstore 8083, autoconfig 8084, proxy 8085).
EXPOSE 2525 2587 2465 2143 2993 2110 2995 2419 2424 2425 2080 8080 8081 8082 8083 8084 8085 8086
ENTRYPOINT ["correo"]
CMD ["operator"]
