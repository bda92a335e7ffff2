// Package interop holds tests only: real third-party clients — Prometheus'
// own Consul service discovery, the Prometheus binary with http_sd_configs
// and a scrape of /metrics, plain HTTP clients holding blocking queries —
// run against a real bftmon node (an in-process CometBFT node with its
// observer, on 127.0.0.1).
package interop
