# One image for every Tillstream service; docker-compose.yml picks the app per container.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY shared shared
COPY services services
COPY tillstream tillstream
RUN pip install .
# Never root: a system user that owns nothing but may read the code.
RUN useradd --system --no-create-home --shell /usr/sbin/nologin tillstream
USER tillstream
EXPOSE 8000
