package envoy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// envoyFilterSpec is the part of an Istio EnvoyFilter the check reads.
type envoyFilterSpec struct {
	ConfigPatches []struct {
		ApplyTo string `yaml:"applyTo"`
		Match   struct {
			Context  string `yaml:"context"`
			Listener struct {
				FilterChain struct {
					Filter struct {
						Name string `yaml:"name"`
					} `yaml:"filter"`
				} `yaml:"filterChain"`
			} `yaml:"listener"`
		} `yaml:"match"`
		Patch struct {
			Operation string `yaml:"operation"`
			Value     struct {
				TypedConfig map[string]any `yaml:"typed_config"`
			} `yaml:"value"`
		} `yaml:"patch"`
	} `yaml:"configPatches"`
}

// checkUnderscoreFilter: an EnvoyFilter in the root namespace merges
// headers_with_underscores_action: REJECT_REQUEST into the HTTP connection
// manager of every sidecar's inbound listeners and of every gateway; the
// patch value is a valid HttpConnectionManager by Envoy's own protos.
func checkUnderscoreFilter(data []byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	docs, err := decodeAll(data)
	if err != nil {
		return []string{err.Error()}
	}
	covered := map[string]bool{}
	for _, o := range docs {
		if o.Kind != "EnvoyFilter" {
			bad("kind: got %q, want EnvoyFilter", o.Kind)
			continue
		}
		if o.Metadata.Namespace != "istio-system" {
			bad("EnvoyFilter %s: namespace: got %q, want istio-system (the root namespace: mesh-wide)", o.Metadata.Name, o.Metadata.Namespace)
		}
		var s envoyFilterSpec
		if err := o.Spec.Decode(&s); err != nil {
			bad("EnvoyFilter %s: %v", o.Metadata.Name, err)
			continue
		}
		for i, p := range s.ConfigPatches {
			where := fmt.Sprintf("EnvoyFilter %s: configPatches[%d]", o.Metadata.Name, i)
			if p.ApplyTo != "NETWORK_FILTER" || p.Match.Listener.FilterChain.Filter.Name != "envoy.filters.network.http_connection_manager" {
				bad("%s: want applyTo NETWORK_FILTER on envoy.filters.network.http_connection_manager", where)
				continue
			}
			if p.Patch.Operation != "MERGE" {
				bad("%s: operation: got %q, want MERGE", where, p.Patch.Operation)
			}
			js, err := json.Marshal(p.Patch.Value.TypedConfig)
			if err != nil {
				bad("%s: %v", where, err)
				continue
			}
			a := &anypb.Any{}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := protojson.Unmarshal(js, a); err != nil {
				bad("%s: typed_config: %v", where, err)
				continue
			}
			if err := a.UnmarshalTo(hcm); err != nil {
				bad("%s: typed_config: %v", where, err)
				continue
			}
			if got := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); got != corev3.HttpProtocolOptions_REJECT_REQUEST {
				bad("%s: headers_with_underscores_action: got %s, want REJECT_REQUEST", where, got)
				continue
			}
			covered[p.Match.Context] = true
		}
	}
	for _, ctx := range []string{"SIDECAR_INBOUND", "GATEWAY"} {
		if !covered[ctx] {
			bad("no patch rejects underscored headers in context %s (got %q)", ctx, slices.Sorted(maps.Keys(covered)))
		}
	}
	if covered["SIDECAR_OUTBOUND"] || covered["ANY"] {
		bad("a patch applies to outbound traffic: your applications' own calls would be refused")
	}
	return problems
}

func TestIstioRejectsUnderscoreHeaders(t *testing.T) {
	for _, p := range checkUnderscoreFilter(readFile(t, "istio/underscore-headers.yaml")) {
		t.Errorf("istio/underscore-headers.yaml: %s", p)
	}
}

func TestIstioUnderscoreCheckCatchesMistakes(t *testing.T) {
	good := readFile(t, "istio/underscore-headers.yaml")
	cases := map[string]struct{ old, new, want string }{
		"allow":         {"headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: ALLOW", "SIDECAR_INBOUND"},
		"misspelt":      {"headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscore_action: REJECT_REQUEST", "typed_config"},
		"no gateway":    {"context: GATEWAY", "context: SIDECAR_INBOUND", "GATEWAY"},
		"outbound":      {"context: GATEWAY", "context: ANY", "outbound"},
		"one namespace": {"namespace: istio-system", "namespace: default", "namespace"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if n := bytes.Count(good, []byte(c.old)); n < 1 {
				t.Fatalf("underscore-headers.yaml lacks %q: update this case", c.old)
			}
			broken := bytes.Replace(good, []byte(c.old), []byte(c.new), 1)
			problems := checkUnderscoreFilter(broken)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Errorf("want a problem mentioning %q, got %q", c.want, problems)
			}
		})
	}
}
