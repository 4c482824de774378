# minitron on GPUs: NGC PyTorch image (CUDA, NCCL, Transformer Engine) + megatron-core + minitron.
#   docker build -t minitron .
#   docker run --gpus all --ipc=host -v $HOME/.cache/minitron:/root/.cache/minitron minitron \
#     minitron eval model.path=/root/.cache/minitron/models/smollm2-135m data.path=... parallel.tp=1
# With Transformer Engine present, minitron builds models with TE's layer spec (fused kernels).
FROM nvcr.io/nvidia/pytorch:25.09-py3
WORKDIR /opt/minitron
COPY pyproject.toml constraints.txt README.md ./
COPY minitron ./minitron
COPY recipes ./recipes
COPY conf ./conf
COPY launch ./launch
COPY benchmarks ./benchmarks
# keep the image's CUDA torch: install minitron's other dependencies around it
RUN pip install --no-cache-dir -e '.[test]'
ENV TOKENIZERS_PARALLELISM=false
CMD ["minitron", "--help"]
