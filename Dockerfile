# Tollgate: one image, several roles (gateway, portal, migrate), chosen by command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --profile production --locked --bin tollgate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/tollgate --create-home tollgate
COPY --from=build /src/target/production/tollgate /usr/local/bin/tollgate
USER tollgate
ENV TOLLGATE_DATA_DIR=/var/lib/tollgate
EXPOSE 8000 8080 8001
ENTRYPOINT ["tollgate"]
CMD ["up"]
