# Tollgate: one image, several roles (gateway, portal, migrate), chosen by command.
FROM rust:1.95-bookworm AS build
# The profile-guided build (scripts/pgo-build.sh) trains the binary on a
# gateway load: nginx is the training's upstream, wrk its client.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx wrk curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN OUT=/src/tollgate scripts/pgo-build.sh

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/tollgate --create-home tollgate
COPY --from=build /src/tollgate /usr/local/bin/tollgate
USER tollgate
ENV TOLLGATE_DATA_DIR=/var/lib/tollgate
EXPOSE 8000 8080 8001
ENTRYPOINT ["tollgate"]
CMD ["up"]
