// Package envoy holds no code: it keeps the deployment files that put
// tokengate in front of an application — envoy.yaml (a static Envoy
// bootstrap), istio/ (mesh provider, AuthorizationPolicy, EnvoyFilters,
// Kubernetes manifests, NetworkPolicy, ServiceMonitor and alerts),
// grafana/ (a dashboard) and the configuration docker-compose.yml runs —
// and the tests that load them with Envoy's own protos, check the settings
// tokengate relies on, and check every PromQL expression against the
// metrics tokengate exports.
package envoy
