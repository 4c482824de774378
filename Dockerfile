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
# keep the image's CUDA torch: install minitron (a wheel: recipes and configs ship inside the package) and its
# other dependencies around it; console scripts land in /usr/local/bin, where the pipeline finds them on PATH
RUN pip install --no-cache-dir '.[test]'
ENV TOKENIZERS_PARALLELISM=false
CMD ["minitron", "--help"]
