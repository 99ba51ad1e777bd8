package envoy_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"

	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tokengate/tokengate/extauthz"
)

// routePatchSpec is the part of an Istio EnvoyFilter of HTTP_ROUTE patches
// the check reads.
type routePatchSpec struct {
	WorkloadSelector struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"workloadSelector"`
	ConfigPatches []struct {
		ApplyTo string `yaml:"applyTo"`
		Match   struct {
			Context            string `yaml:"context"`
			RouteConfiguration struct {
				Vhost struct {
					Route struct {
						Name string `yaml:"name"`
					} `yaml:"route"`
				} `yaml:"vhost"`
			} `yaml:"routeConfiguration"`
		} `yaml:"match"`
		Patch struct {
			Operation string `yaml:"operation"`
			Value     struct {
				TypedPerFilterConfig map[string]any `yaml:"typed_per_filter_config"`
			} `yaml:"value"`
		} `yaml:"patch"`
	} `yaml:"configPatches"`
}

type virtualServiceSpec struct {
	HTTP []struct {
		Name  string `yaml:"name"`
		Match []struct {
			Name string `yaml:"name"`
		} `yaml:"match"`
	} `yaml:"http"`
}

// routeNames are the names of the Envoy routes Istio makes of s's http
// routes: an http route's name, or <name>.<match name> for a named match.
func (s virtualServiceSpec) routeNames() []string {
	var out []string
	for _, h := range s.HTTP {
		named := false
		for _, m := range h.Match {
			if m.Name != "" {
				named = true
				out = append(out, h.Name+"."+m.Name)
			}
		}
		if !named {
			out = append(out, h.Name)
		}
	}
	return out
}

// configMapPolicies are the policy names of the tokengate configuration in
// a ConfigMap of data (tokengate.yaml's key tokengate.yaml).
func configMapPolicies(data []byte) ([]string, error) {
	docs, err := decodeAll(data)
	if err != nil {
		return nil, err
	}
	for _, o := range docs {
		if text, ok := o.Data["tokengate.yaml"]; o.Kind == "ConfigMap" && ok {
			return tokengatePolicies([]byte(text))
		}
	}
	return nil, fmt.Errorf("no ConfigMap with tokengate.yaml")
}

// checkRoutePolicyFilter: every HTTP_ROUTE patch of route-policy.yaml
// merges an ExtAuthzPerRoute, valid by Envoy's own protos, under the
// ext_authz filter's name, naming a policy tokengate.yaml's ConfigMap
// defines; into a route where requests come in (a gateway's, or a sidecar's
// inbound), which a VirtualService in the file names (on a gateway), of a
// workload a CUSTOM AuthorizationPolicy selects (else there is no ext_authz
// to read it).
func checkRoutePolicyFilter(files map[string][]byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	defined, err := configMapPolicies(files["tokengate.yaml"])
	if err != nil {
		return []string{"tokengate.yaml: " + err.Error()}
	}
	docs, err := decodeAll(files["route-policy.yaml"])
	if err != nil {
		return []string{"route-policy.yaml: " + err.Error()}
	}

	var routeNames []string // the gateway routes the VirtualServices name
	type selected struct {
		namespace string
		labels    map[string]string
	}
	var custom []selected // the workloads with ext_authz
	for _, o := range docs {
		switch o.Kind {
		case "VirtualService":
			var s virtualServiceSpec
			if err := o.Spec.Decode(&s); err != nil {
				bad("VirtualService %s: %v", o.Metadata.Name, err)
				continue
			}
			routeNames = append(routeNames, s.routeNames()...)
		case "AuthorizationPolicy":
			var s policySpec
			if err := o.Spec.Decode(&s); err != nil {
				bad("AuthorizationPolicy %s: %v", o.Metadata.Name, err)
				continue
			}
			if s.Action == "CUSTOM" {
				custom = append(custom, selected{o.Metadata.Namespace, s.Selector.MatchLabels})
			}
		}
	}

	patches := 0
	for _, o := range docs {
		if o.Kind != "EnvoyFilter" {
			continue
		}
		var s routePatchSpec
		if err := o.Spec.Decode(&s); err != nil {
			bad("EnvoyFilter %s: %v", o.Metadata.Name, err)
			continue
		}
		if !slices.ContainsFunc(custom, func(c selected) bool {
			return c.namespace == o.Metadata.Namespace && maps.Equal(c.labels, s.WorkloadSelector.Labels)
		}) {
			bad("EnvoyFilter %s: workloadSelector %v in namespace %s: no CUSTOM AuthorizationPolicy selects it (no ext_authz to read the policy)",
				o.Metadata.Name, s.WorkloadSelector.Labels, o.Metadata.Namespace)
		}
		for i, p := range s.ConfigPatches {
			where := fmt.Sprintf("EnvoyFilter %s: configPatches[%d]", o.Metadata.Name, i)
			patches++
			if p.ApplyTo != "HTTP_ROUTE" {
				bad("%s: applyTo: got %q, want HTTP_ROUTE", where, p.ApplyTo)
			}
			if p.Patch.Operation != "MERGE" {
				bad("%s: operation: got %q, want MERGE (the route keeps Istio's other settings)", where, p.Patch.Operation)
			}
			route := p.Match.RouteConfiguration.Vhost.Route.Name
			switch p.Match.Context {
			case "GATEWAY":
				if !slices.Contains(routeNames, route) {
					bad("%s: route name: got %q, want a VirtualService http[].name %q", where, route, routeNames)
				}
			case "SIDECAR_INBOUND":
				if route != "default" {
					bad("%s: route name: got %q, want \"default\" (Istio's one inbound route per port)", where, route)
				}
			default:
				bad("%s: context: got %q, want GATEWAY or SIDECAR_INBOUND (where requests come in)", where, p.Match.Context)
			}
			if names := keys(p.Patch.Value.TypedPerFilterConfig); !slices.Equal(names, []string{extAuthzFilter}) {
				bad("%s: typed_per_filter_config filter names: got %q, want only %s", where, names, extAuthzFilter)
			}
			cfg, ok := p.Patch.Value.TypedPerFilterConfig[extAuthzFilter]
			if !ok {
				continue
			}
			per, err := perRouteOf(cfg)
			if err != nil {
				bad("%s: %s: %v", where, extAuthzFilter, err)
				continue
			}
			if per.GetDisabled() {
				bad("%s: %s: disabled: want the check on, with a policy", where, extAuthzFilter)
			}
			name, named := per.GetCheckSettings().GetContextExtensions()[extauthz.PolicyKey]
			switch {
			case !named:
				bad("%s: check_settings.context_extensions: no %s", where, extauthz.PolicyKey)
			case !slices.Contains(defined, name):
				bad("%s: context_extensions %s: got %q, want one of the ConfigMap's policy.policies %q (else 403 policy_unknown)",
					where, extauthz.PolicyKey, name, defined)
			}
		}
	}
	if patches == 0 {
		bad("EnvoyFilter: got no HTTP_ROUTE patch, want one naming a policy")
	}
	return problems
}

// perRouteOf reads a patch value the way Istio hands it to Envoy: JSON
// into an Any, the Any into an ExtAuthzPerRoute, then its validation rules.
func perRouteOf(cfg any) (*extauthzv3.ExtAuthzPerRoute, error) {
	want := "type.googleapis.com/" + string((&extauthzv3.ExtAuthzPerRoute{}).ProtoReflect().Descriptor().FullName())
	if m, ok := cfg.(map[string]any); !ok || m["@type"] != want {
		// Checked first: another message's fields are unknown fields here,
		// which would hide the cause.
		return nil, fmt.Errorf("@type: got %v, want %s", m["@type"], want)
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	a := &anypb.Any{}
	if err := protojson.Unmarshal(js, a); err != nil {
		return nil, err
	}
	per := &extauthzv3.ExtAuthzPerRoute{}
	if err := a.UnmarshalTo(per); err != nil {
		return nil, err
	}
	if err := per.ValidateAll(); err != nil {
		return nil, err
	}
	return per, nil
}

func readRoutePolicyFiles(t *testing.T) map[string][]byte {
	t.Helper()
	return map[string][]byte{
		"route-policy.yaml": readFile(t, "istio/route-policy.yaml"),
		"tokengate.yaml":    readFile(t, "istio/tokengate.yaml"),
	}
}

func TestIstioRoutePolicy(t *testing.T) {
	for _, p := range checkRoutePolicyFilter(readRoutePolicyFiles(t)) {
		t.Errorf("istio/route-policy.yaml: %s", p)
	}
}

// TestIstioRoutePolicyCheckCatchesMistakes breaks route-policy.yaml or the
// ConfigMap in one way each and expects a problem naming it.
func TestIstioRoutePolicyCheckCatchesMistakes(t *testing.T) {
	good := readRoutePolicyFiles(t)
	const perRoute = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
	cases := map[string]mutation{
		"wrong filter name": {
			"route-policy.yaml", "          envoy.filters.http.ext_authz:\n", "          envoy.filters.http.ext_auth:\n", "filter names",
		},
		"wrong @type": {
			"route-policy.yaml", perRoute, "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz", "@type",
		},
		"misspelt field": {
			"route-policy.yaml", "context_extensions:", "context_extension:", "context_extension",
		},
		"missing policy": {
			"route-policy.yaml", "policy: partner-api", "route: api", "no policy",
		},
		"undefined policy": {
			"route-policy.yaml", "policy: partner-api", "policy: partner", `"partner"`,
		},
		"policy not in the ConfigMap": {
			"tokengate.yaml", "        partner-api:\n", "        partners:\n", `"partner-api"`,
		},
		"route the VirtualService does not name": {
			"route-policy.yaml", "            name: partner-api\n", "            name: partner\n", "route name",
		},
		"outbound": {
			"route-policy.yaml", "context: GATEWAY", "context: SIDECAR_OUTBOUND", "context",
		},
		"replace, not merge": {
			"route-policy.yaml", "operation: MERGE", "operation: REPLACE", "operation",
		},
		"no ext_authz on the gateway": {
			"route-policy.yaml", "action: CUSTOM", "action: ALLOW", "no CUSTOM AuthorizationPolicy",
		},
		"check disabled as well": {
			"route-policy.yaml", "            check_settings:\n", "            disabled: true\n            check_settings:\n", "oneof",
		},
	}
	catchMistakes(t, good, cases, func(files map[string][]byte) []string { return checkRoutePolicyFilter(files) })
}
