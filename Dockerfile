# One image for every Tillstream service; docker-compose.yml picks the app per container.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md requirements.lock ./
# Only what the lock names, each package checked against its hashes (as `make` installs).
RUN pip install --require-hashes -r requirements.lock
COPY shared shared
COPY services services
COPY tillstream tillstream
RUN pip install --no-deps --no-build-isolation .
# Never root: a system user that owns nothing but may read the code.
RUN useradd --system --no-create-home --shell /usr/sbin/nologin tillstream
USER tillstream
EXPOSE 8000
