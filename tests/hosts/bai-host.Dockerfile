# A Docker-capable bai test host: the offline systemd host (build-systemd-image.sh) plus Debian's
# docker.io and bai's runtime Python dependencies in /opt/bai/venv (from the wheelhouse that
# build-bai-host-image.sh builds once per machine), and bai installed editable from /opt/bai/src,
# which holds only a skeleton here: tests/fixtures/testhosts.py copies the checkout over it at
# start, and the editable install's finder (top-level packages -> /opt/bai/src/...) and entry
# points (from this pyproject.toml) serve it as it is, with no pip run per host.
ARG BASE=bai-test/systemd-host:bookworm
FROM ${BASE}
# docker.io: the agent's engine (docker.service starts at boot; /var/lib/docker is a volume);
# python3-venv/-dev, gcc: what bootstrap.sh checks for; openssh-client, sshfs: shared storage
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      docker.io iptables python3-venv python3-dev gcc libc6-dev openssh-client sshfs \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY wheelhouse /opt/bai/wheelhouse
COPY requirements.txt /opt/bai/requirements.txt
RUN /usr/bin/python3 -m venv /opt/bai/venv \
 && /opt/bai/venv/bin/pip install -q --disable-pip-version-check --no-index \
      --find-links /opt/bai/wheelhouse -r /opt/bai/requirements.txt setuptools wheel \
 && rm -rf /root/.cache/pip
COPY pyproject.toml README.md /opt/bai/src/
RUN mkdir -p /opt/bai/src/components/bai /opt/bai/src/installer /opt/bai/src/roles \
 && touch /opt/bai/src/components/bai/__init__.py /opt/bai/src/installer/__init__.py \
      /opt/bai/src/roles/__init__.py \
 && /opt/bai/venv/bin/pip install -q --disable-pip-version-check --no-index --no-deps \
      --no-build-isolation -e /opt/bai/src \
 && rm -rf /root/.cache/pip
# later pip runs in the host (bootstrap.sh, an upgrade) find these wheels first
RUN printf '[global]\nfind-links = /opt/bai/wheelhouse\ndisable-pip-version-check = true\n' > /etc/pip.conf
VOLUME /var/lib/docker
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
