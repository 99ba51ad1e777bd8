// Package policytest holds route policies that tests and benchmarks of
// more than one package share.
package policytest

import (
	"fmt"

	"github.com/tokengate/tokengate/policy"
)

// ThousandRules is a 1,000-rule default policy: prefix rules /svc-N
// requiring the admin role, exact /svc-N/health paths, 20 regexps, 10 CEL
// rules, and prefixes under the wildcard host *.example.org. The request
// GET /svc-990/items/42 is decided by a prefix rule near the end.
// extauthz's BenchmarkCheckPolicy runs it in a Check; policy's
// BenchmarkRouteCheckPolicy measures its Route and Decide alone.
func ThousandRules() []policy.RuleSpec {
	var rules []policy.RuleSpec
	for i := 0; len(rules) < 1000; i++ {
		name := fmt.Sprintf("r%d", len(rules))
		switch {
		case i%50 == 7:
			rules = append(rules, policy.RuleSpec{Name: name, Match: policy.MatchSpec{PathRegex: fmt.Sprintf("/re-%d/[0-9]+", i)}})
		case i%100 == 13:
			rules = append(rules, policy.RuleSpec{Name: name, Match: policy.MatchSpec{PathPrefix: fmt.Sprintf("/cel-%d", i)},
				Require: policy.Require{When: `claims.sub == "user-1"`}})
		case i%10 == 3:
			rules = append(rules, policy.RuleSpec{Name: name, Match: policy.MatchSpec{Path: fmt.Sprintf("/svc-%d/health", i)}, Access: "public"})
		case i%7 == 0:
			rules = append(rules, policy.RuleSpec{Name: name, Match: policy.MatchSpec{Host: "*.example.org", PathPrefix: fmt.Sprintf("/svc-%d", i)}})
		default:
			rules = append(rules, policy.RuleSpec{Name: name, Match: policy.MatchSpec{PathPrefix: fmt.Sprintf("/svc-%d", i)},
				Require: policy.Require{Roles: policy.AnyAll{AnyOf: []string{"admin"}}}})
		}
	}
	return rules
}
