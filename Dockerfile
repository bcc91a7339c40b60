# gbgw: GB/T 28181 gateway. Build: docker build -t gbgw .  Run: docker run --network host gbgw
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY sip ./sip
COPY media ./media
COPY gateway ./gateway
COPY config ./config
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /var/lib/gbgw --create-home gbgw

USER gbgw
WORKDIR /var/lib/gbgw
# SIP (UDP+TCP), HTTP API, RTP range
EXPOSE 5060/udp 5060/tcp 8080/tcp 30000-30999/udp 30000-30999/tcp
ENV GBGW_GATEWAY__DATA_DIR=/var/lib/gbgw/data
# HTTP on all interfaces needs a token: pass GBGW_HTTP__TOKEN (the gateway refuses to start without)
ENV GBGW_HTTP__LISTEN=0.0.0.0
ENTRYPOINT ["gbgw"]
CMD ["serve"]
