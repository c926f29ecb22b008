FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY eventstore eventstore
COPY commands commands
COPY projections projections
COPY pipeline pipeline
COPY activity activity
COPY api api
COPY scheduler scheduler
COPY executor executor
COPY migrations migrations
COPY mechamental mechamental
RUN pip install --no-cache-dir . \
    && useradd --system --no-create-home mechamental \
    && mkdir /data && chown mechamental /data
USER mechamental
ENTRYPOINT ["mechamental"]
