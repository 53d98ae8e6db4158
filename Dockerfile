# vwproxy as a container image: `docker build -t vwproxy:dev .` (docker-compose.yml builds it).
# The entrypoint is the `vwproxy` command; the default command serves the example topology on
# all interfaces with its data in /data (mount a volume there to keep it).
FROM python:3.11-slim

WORKDIR /src
# What `pip install .` reads: the project file, the README it names, the package, and the
# top-level policies/ folder that vwproxy/auth/policies links to (the bootstrap RBAC policy).
COPY pyproject.toml README.md ./
COPY policies ./policies
COPY vwproxy ./vwproxy
RUN pip install --no-cache-dir . && rm -rf /src

RUN useradd --system --uid 10001 --create-home --home-dir /home/vwproxy vwproxy \
    && mkdir /data && chown vwproxy:vwproxy /data
USER vwproxy
WORKDIR /home/vwproxy

EXPOSE 6443
ENTRYPOINT ["vwproxy"]
CMD ["serve", "--host", "0.0.0.0", "--port", "6443", "--data-dir", "/data"]
