# One image for every role (web, cpu worker, gpu worker); compose.yaml picks the command.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
COPY product_studio product_studio
COPY tasks tasks
COPY templates templates
RUN pip install --no-cache-dir -c requirements.lock . \
 && U2NET_HOME=/models product-studio models fetch --warm
ENV U2NET_HOME=/models PRODUCT_STUDIO_MODEL_DIR=/models
