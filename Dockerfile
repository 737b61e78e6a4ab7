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
EXPOSE 8080
# The status server must listen beyond loopback inside the container for this (and for -p 8080):
# set gateway.http.listen: 0.0.0.0:8080 in the mounted config.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"
ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/etc/gateway/config.yaml"]
