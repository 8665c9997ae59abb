# The one image every pipeline component, TrainJob and server runs (gr2.contract.IMAGE).
# Build: docker build -t ghcr.io/gr2-mlops/gr2:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/tmp/hf \
    MPLCONFIGDIR=/tmp/mpl \
    GX_ANALYTICS_ENABLED=false \
    TOKENIZERS_PARALLELISM=false

WORKDIR /opt/gr2

# torch first, from the CPU index, so that nothing pulls a CUDA build (a GPU image swaps this line)
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

# then the project with its pipeline and serving extras (kfp is in the image: install_kfp_package=False)
COPY pyproject.toml README.md ./
COPY gr2 ./gr2
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY feature_store ./feature_store
RUN pip install -e ".[pipeline,serve]"  # editable: the Feast repo and configs resolve from /opt/gr2

RUN useradd --uid 1000 --create-home gr2 && mkdir -p /tmp/hf /tmp/mpl && chown -R 1000 /tmp/hf /tmp/mpl
USER 1000
ENTRYPOINT ["gr2"]
