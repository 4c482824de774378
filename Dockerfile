# minitron on GPUs: NGC PyTorch image (CUDA, NCCL, Transformer Engine) + megatron-core + minitron.
#   docker build -t minitron .
#   docker run --gpus all --ipc=host -v $HOME/.cache/minitron:/root/.cache/minitron minitron \
#     minitron eval model.path=/root/.cache/minitron/models/smollm2-135m data.path=... parallel.tp=1
# Base: NGC PyTorch 25.12, whose release notes give PyTorch 2.10.0a0+b4e4ee81d3, CUDA 13.1.0, Python 3.12 and
# Transformer Engine 2.10; megatron-core 0.16.1 asks for transformer-engine >=2.9,<2.12 built for CUDA 13, which
# this is. With Transformer Engine present and a GPU visible, minitron builds models with TE's layer spec (fused
# kernels). CI builds this file against a CPU stand-in for the base (tests/infra/container.py).
FROM nvcr.io/nvidia/pytorch:25.12-py3
WORKDIR /opt/minitron
COPY pyproject.toml constraints.txt README.md ./
COPY minitron ./minitron
COPY recipes ./recipes
COPY conf ./conf
COPY launch ./launch
COPY benchmarks ./benchmarks
# keep the image's CUDA torch (its /etc/pip/constraint.txt holds it): install minitron (a wheel: recipes and configs
# ship inside the package) and its other dependencies around it, at the ranges pyproject.toml declares; console
# scripts land beside the image's python, on PATH, where the pipeline finds them (hadolint's DL3013 asks for pins:
# this installs the project itself)
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[test]'
# (hadolint's DL3064 takes the word TOKEN in this name for a secret: a false positive)
# hadolint ignore=DL3064
ENV TOKENIZERS_PARALLELISM=false
CMD ["minitron", "--help"]
