// Package envoy holds no code: it keeps the deployment files that put
// tokengate in front of an application — envoy.yaml (a static Envoy
// bootstrap), istio/ (mesh provider, AuthorizationPolicy, EnvoyFilters,
// Kubernetes manifests, NetworkPolicy, ServiceMonitor and alerts),
// grafana/ (a dashboard), the configuration docker-compose.yml runs, and
// nginx/, caddy/ and traefik/ (the other proxies, through tokengate's HTTP
// authorization endpoint) — and the tests that load them with Envoy's own
// protos, check the settings tokengate relies on, check every PromQL
// expression against the metrics tokengate exports, and run real nginx and
// Caddy with their files in front of tokengate.
package envoy
