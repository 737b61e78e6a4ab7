# Shopfloor Gateway: a small image for an edge box. Build: docker build -t shopfloor-gateway .
# Run:   docker run -v $PWD/my.yaml:/etc/gateway/config.yaml -v gateway-data:/data \
#          -p 127.0.0.1:8080:8080 shopfloor-gateway
# (set gateway.http.listen: 0.0.0.0:8080 in my.yaml so the published port reaches the server)
# The simulated machines, from the same image:
#        docker run --entrypoint python shopfloor-gateway -m simulators --host 0.0.0.0
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY drivers ./drivers
COPY simulators ./simulators
COPY deploy/runtime_requirements.py ./deploy/
# The dependencies without the demo-only ones (amqtt, the demo's embedded broker), then the
# gateway's own wheel without its dependency list.
RUN python deploy/runtime_requirements.py pyproject.toml > /requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels -r /requirements.txt \
    && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/gateway .

FROM python:3.11-slim AS gateway
# dialout: Modbus RTU opens /dev/ttyUSB0 and friends (pass them with --device).
RUN useradd --system --uid 10001 --groups dialout --home-dir /data gateway \
    && mkdir -p /data /etc/gateway && chown gateway /data
COPY --from=build /requirements.txt /requirements.txt
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels -r /requirements.txt \
    && pip install --no-cache-dir --no-deps /wheels/gateway/*.whl && rm -rf /wheels
COPY config/modbus-demo.yaml /etc/gateway/config.yaml
COPY deploy/healthcheck.py /usr/local/lib/gateway-healthcheck.py
USER gateway
WORKDIR /data
VOLUME ["/data"]
ENV GATEWAY_CONFIG=/etc/gateway/config.yaml
EXPOSE 8080
# Gateway health: the process answers on the port of gateway.http.listen in the config (or
# GATEWAY_HTTP_LISTEN). A PLC that is down is plant health (GET /healthz, 503): it must not
# make Docker restart the gateway. `--plant` in this command asks for that instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/gateway-healthcheck.py"]
ENTRYPOINT ["gateway"]
CMD ["run", "--config", "/etc/gateway/config.yaml"]
