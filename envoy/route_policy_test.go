package envoy_test

import (
	"fmt"
	"slices"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/tokengate/tokengate/extauthz"
)

// tokengatePolicies are the route policy names a tokengate configuration
// defines (policy.policies), sorted; none without a policy section.
func tokengatePolicies(data []byte) ([]string, error) {
	var cfg struct {
		Policy struct {
			Policies map[string]yaml.Node `yaml:"policies"`
		} `yaml:"policy"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return nil, err
	}
	return keys(cfg.Policy.Policies), nil
}

// namedPolicy is a policy an ExtAuthzPerRoute names, and where.
type namedPolicy struct {
	where, name string
}

// namedPolicies are the policies b's ExtAuthzPerRoute configs name in
// check_settings.context_extensions, on a route configuration, a virtual
// host or a route (Envoy uses the most specific one).
func namedPolicies(b *bootstrapv3.Bootstrap) ([]namedPolicy, []string) {
	var out []namedPolicy
	var problems []string
	add := func(where string, cfgs map[string]*anypb.Any) {
		cfg, ok := cfgs[extAuthzFilter]
		if !ok {
			return
		}
		per := &extauthzv3.ExtAuthzPerRoute{}
		if err := cfg.UnmarshalTo(per); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			return
		}
		if name, ok := per.GetCheckSettings().GetContextExtensions()[extauthz.PolicyKey]; ok {
			out = append(out, namedPolicy{where, name})
		}
	}
	hcms, err := connectionManagers(b)
	if err != nil {
		return nil, []string{err.Error()}
	}
	for _, hcm := range hcms {
		rc := hcm.GetRouteConfig()
		add("route_config "+rc.GetName(), rc.GetTypedPerFilterConfig())
		for _, vh := range rc.GetVirtualHosts() {
			add("virtual host "+vh.GetName(), vh.GetTypedPerFilterConfig())
			for _, r := range vh.GetRoutes() {
				add(fmt.Sprintf("route %s", r.GetMatch()), r.GetTypedPerFilterConfig())
			}
		}
	}
	return out, problems
}

// checkPolicyNames: every policy envoy.yaml names is one tokengate defines.
// tokengate denies a request whose route names an undefined policy (403
// policy_unknown, and never "default" instead), so a typo in either file
// would refuse the route's every request. At least one route names a
// policy: envoy.yaml is the example of how.
func checkPolicyNames(b *bootstrapv3.Bootstrap, defined []string) []string {
	named, problems := namedPolicies(b)
	for _, n := range named {
		switch {
		case len(defined) == 0:
			problems = append(problems, fmt.Sprintf("%s: context_extensions %s: %q, and tokengate has no policy.policies (a named policy without a policy is denied)",
				n.where, extauthz.PolicyKey, n.name))
		case !slices.Contains(defined, n.name):
			problems = append(problems, fmt.Sprintf("%s: context_extensions %s: got %q, want one of policy.policies %q (else 403 policy_unknown)",
				n.where, extauthz.PolicyKey, n.name, defined))
		}
	}
	if len(named) == 0 {
		problems = append(problems, fmt.Sprintf("no route names a policy (check_settings.context_extensions %s: NAME)", extauthz.PolicyKey))
	}
	return problems
}

// TestEnvoyPoliciesDefined: the policies envoy.yaml's routes name are
// those the compose tokengate defines.
func TestEnvoyPoliciesDefined(t *testing.T) {
	b, err := loadBootstrap(readFile(t, "envoy.yaml"))
	if err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	defined, err := tokengatePolicies(readFile(t, "tokengate.compose.yaml"))
	if err != nil {
		t.Fatalf("tokengate.compose.yaml: %v", err)
	}
	for _, p := range checkPolicyNames(b, defined) {
		t.Errorf("envoy.yaml and tokengate.compose.yaml: %s", p)
	}
}

// TestPolicyNamesCheckCatchesMistakes breaks envoy.yaml or
// tokengate.compose.yaml in one way each and expects a problem naming it.
func TestPolicyNamesCheckCatchesMistakes(t *testing.T) {
	good := map[string][]byte{
		"envoy.yaml":             readFile(t, "envoy.yaml"),
		"tokengate.compose.yaml": readFile(t, "tokengate.compose.yaml"),
	}
	const vhostPolicy = `domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.ext_authz:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                  check_settings: {context_extensions: {policy: internal}}`
	cases := map[string]mutation{
		"route names an undefined policy": {
			"envoy.yaml", "policy: partner-api", "policy: partner", `"partner"`,
		},
		"virtual host names an undefined policy": {
			"envoy.yaml", `domains: ["*"]`, vhostPolicy, `"internal"`,
		},
		"no route names a policy": {
			"envoy.yaml", "policy: partner-api", "route: api", "no route names a policy",
		},
		"policy renamed in tokengate": {
			"tokengate.compose.yaml", "    partner-api:\n", "    partners:\n", `"partner-api"`,
		},
		"tokengate without a policy": {
			"tokengate.compose.yaml", "\npolicy:\n", "\nno_policy:\n", `"partner-api"`,
		},
	}
	catchMistakes(t, good, cases, func(files map[string][]byte) []string {
		b, err := loadBootstrap(files["envoy.yaml"])
		if err != nil {
			return []string{"envoy.yaml: " + err.Error()}
		}
		defined, err := tokengatePolicies(files["tokengate.compose.yaml"])
		if err != nil {
			return []string{"tokengate.compose.yaml: " + err.Error()}
		}
		return checkPolicyNames(b, defined)
	})
}
