# The Palaestra server image for Ray clusters (KubeRay's head and worker pods, or `ray start` on VMs).
# Built by scripts/build_server_image.sh, which puts the palaestra wheel in dist/ of the build context.
# The base must carry the SAME Ray and Python versions as the rest of the cluster (Ray requires it).
ARG BASE=rayproject/ray:2.60.0-py311-cpu
FROM ${BASE}
COPY dist/ /tmp/palaestra-dist/
# [ray] is already in the base; [docker] lets replicas use a Docker engine for sandboxes when one is mounted.
RUN python -m pip install --no-cache-dir "$(ls /tmp/palaestra-dist/palaestra-*.whl)[ray,docker]" \
    && rm -rf /tmp/palaestra-dist \
    && palaestra --help > /dev/null
# Replicas bind ephemeral ports (Ray picks the node; `palaestra cluster up --host node` binds the pod IP).
