# Shopfloor Gateway: a small image for an edge box. Build: docker build -t shopfloor-gateway .
# Run:   docker run -v $PWD/my.yaml:/etc/gateway/config.yaml -v gateway-data:/data shopfloor-gateway
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY drivers ./drivers
COPY simulators ./simulators
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data gateway && mkdir -p /data /etc/gateway \
    && chown gateway /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/modbus-demo.yaml /etc/gateway/config.yaml
USER gateway
WORKDIR /data
VOLUME ["/data"]
ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/etc/gateway/config.yaml"]
