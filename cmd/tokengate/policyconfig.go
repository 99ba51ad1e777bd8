package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tokengate/tokengate/policy"
)

// PolicyConfig is the route policy: which rule decides each request. Without
// policies and without a file there is none, and every request needs a
// valid, unrevoked token, as before route policies existed.
type PolicyConfig struct {
	// File holds the policies (a YAML file with the one key policies:),
	// reloaded when it changes and on SIGHUP; a relative path is relative to
	// the configuration file. Not together with Policies.
	File string `yaml:"file"`
	// Unmatched is what a request no rule matches gets: deny (403
	// route_unmatched) or authenticated (a valid token, nothing more).
	Unmatched string `yaml:"unmatched"`
	// PollInterval is how often File is read again besides the file-system
	// events, which some file systems (NFS, some container mounts) never
	// send and which a watch can miss.
	PollInterval time.Duration `yaml:"poll_interval"`
	// Policies by name; "default" is used when Envoy names none.
	Policies map[string][]PolicyRuleConfig `yaml:"policies"`
}

// PolicyRuleConfig is one rule, as policy.RuleSpec reads it.
type PolicyRuleConfig struct {
	Name          string              `yaml:"name"`
	Match         PolicyMatchConfig   `yaml:"match"`
	Access        string              `yaml:"access"`
	RejectInvalid bool                `yaml:"reject_invalid"`
	Require       PolicyRequireConfig `yaml:"require"`
	Shadow        bool                `yaml:"shadow"`
	Headers       map[string]string   `yaml:"headers"`
	// ForwardToken false removes the token before the request goes on;
	// absent means true.
	ForwardToken *bool `yaml:"forward_token"`
}

type PolicyMatchConfig struct {
	Host       string   `yaml:"host"`
	Path       string   `yaml:"path"`
	PathPrefix string   `yaml:"path_prefix"`
	PathRegex  string   `yaml:"path_regex"`
	Methods    []string `yaml:"methods"`
}

type PolicyRequireConfig struct {
	Issuers   []string     `yaml:"issuers"`
	Audiences []string     `yaml:"audiences"`
	Scopes    AnyAllConfig `yaml:"scopes"`
	Roles     AnyAllConfig `yaml:"roles"`
	When      string       `yaml:"when"`
}

type AnyAllConfig struct {
	AllOf []string `yaml:"all_of"`
	AnyOf []string `yaml:"any_of"`
}

// policyFile is the policy file: the policies alone.
type policyFile struct {
	Policies map[string][]PolicyRuleConfig `yaml:"policies"`
}

// configured reports whether a route policy is configured at all.
func (pc PolicyConfig) configured() bool { return len(pc.Policies) > 0 || pc.File != "" }

// configSource is where a configuration came from, so that problems found
// after decoding can name the file and the line.
type configSource struct {
	name  string         // the file's name; "" when read from elsewhere
	lines map[string]int // YAML path → line
}

// policySettings is the route policy as loaded: the set compiled at start
// and what a reload of the file compiles the next one with.
type policySettings struct {
	set *policy.Set
	// base is the policy options but the policies: the issuers, the claim
	// headers and unmatched, which only a restart changes.
	base policy.Options
	// file is the policy file's path (resolved), "" for inline policies.
	file string
	// sum is the SHA-256 of the file's content as loaded, so that an
	// unchanged file is not applied again.
	sum [sha256.Size]byte
	// names and rules say what was loaded, for the logs.
	names []string
	rules int
	// check holds a set to what the rest of the configuration demands of
	// it (its rule headers are no token source): at start, and on every
	// reload.
	check func(*policy.Set) []error
}

// maxPolicyFileBytes bounds the policy file: a bigger one is refused, not
// read into memory on every poll.
const maxPolicyFileBytes = 4 << 20

// policyOptions are the policy options but the policies.
func (c Config) policyOptions() policy.Options {
	opts := policy.Options{Unmatched: policy.UnmatchedDeny, ClaimHeaders: maps.Clone(c.ClaimHeaders)}
	if c.Policy.Unmatched == "authenticated" {
		opts.Unmatched = policy.UnmatchedAuthenticated
	}
	for _, ic := range c.Issuers {
		opts.Issuers = append(opts.Issuers, policy.IssuerInfo{Name: ic.Name, Iss: ic.Issuer, RolesClaim: ic.RolesClaim})
	}
	return opts
}

// buildPolicy validates the policy keys and compiles the policies, inline
// or from the file; nil when no policy is configured. Every problem of a
// policy names the file and the line.
func (c Config) buildPolicy(src configSource) (*policySettings, []error) {
	pc := c.Policy
	var errs []error
	if pc.Unmatched != "deny" && pc.Unmatched != "authenticated" {
		errs = append(errs, fmt.Errorf("policy.unmatched: want deny or authenticated, got %q", pc.Unmatched))
	}
	if pc.PollInterval < 100*time.Millisecond {
		errs = append(errs, errors.New("policy.poll_interval: must be at least 100ms"))
	}
	if pc.File != "" && len(pc.Policies) > 0 {
		errs = append(errs, errors.New("policy: give file or policies, not both"))
	}
	for i, ic := range c.Issuers {
		if ic.RolesClaim == "" || strings.HasPrefix(ic.RolesClaim, ".") || strings.HasSuffix(ic.RolesClaim, ".") ||
			strings.Contains(ic.RolesClaim, "..") {
			errs = append(errs, fmt.Errorf("issuers[%d].roles_claim: want a claim or a dotted path to one (realm_access.roles), got %q", i, ic.RolesClaim))
		}
	}
	if len(errs) > 0 || !pc.configured() {
		return nil, errs
	}
	ps := &policySettings{base: c.policyOptions()}
	if pc.File == "" {
		name := src.name
		if name == "" {
			name = "(config)"
		}
		ps.set, ps.names, ps.rules, errs = compilePolicy(ps.base, pc.Policies, name, "policy.", src.lines)
		if len(errs) > 0 {
			return nil, errs
		}
		return ps, nil
	}
	ps.file = pc.File
	if !filepath.IsAbs(ps.file) && src.name != "" {
		ps.file = filepath.Join(filepath.Dir(src.name), ps.file)
	}
	data, err := readPolicyFile(ps.file)
	if err != nil {
		return nil, []error{fmt.Errorf("policy.file: %w", err)}
	}
	ps.sum = sha256.Sum256(data)
	ps.set, ps.names, ps.rules, errs = loadPolicyFile(ps.base, ps.file, data)
	if len(errs) > 0 {
		return nil, errs
	}
	return ps, nil
}

// readPolicyFile reads the policy file, refusing one too big to be a
// policy.
func readPolicyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPolicyFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxPolicyFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPolicyFileBytes)
	}
	return data, nil
}

// loadPolicyFile decodes and compiles a policy file's content over base;
// each problem is "FILE:LINE: policies.…: problem".
func loadPolicyFile(base policy.Options, name string, data []byte) (*policy.Set, []string, int, []error) {
	var pf policyFile
	lines := map[string]int{}
	problems, err := decodeYAML(data, &pf, lines)
	if err != nil {
		return nil, nil, 0, []error{fmt.Errorf("%s: %w", name, err)}
	}
	if len(problems) > 0 {
		out := make([]error, 0, len(problems))
		for _, p := range problems {
			var dp *decodeProblem
			if errors.As(p, &dp) {
				out = append(out, fmt.Errorf("%s:%d: %s", name, dp.Line, dp.place()))
				continue
			}
			out = append(out, fmt.Errorf("%s: %w", name, p))
		}
		return nil, nil, 0, out
	}
	if len(pf.Policies) == 0 {
		return nil, nil, 0, []error{fmt.Errorf("%s:1: policies: no policies (the file holds `policies:`, a mapping of policy names to rules)", name)}
	}
	return compilePolicy(base, pf.Policies, name, "", lines)
}

// compilePolicy compiles policies over base. Each problem names the file
// and the line of its YAML path (prefix, "policy." for inline policies,
// is where the policies are in that file), and the rule's name when it has
// one.
func compilePolicy(base policy.Options, policies map[string][]PolicyRuleConfig, name, prefix string,
	lines map[string]int) (*policy.Set, []string, int, []error) {
	opts := base
	opts.Policies = make(map[string][]policy.RuleSpec, len(policies))
	rules := 0
	for pname, rs := range policies {
		specs := make([]policy.RuleSpec, len(rs))
		for i, r := range rs {
			specs[i] = r.spec()
		}
		opts.Policies[pname] = specs
		rules += len(rs)
	}
	set, err := policy.Compile(opts)
	if err != nil {
		var out []error
		for _, e := range joined(err) {
			out = append(out, placeError(e, policies, name, prefix, lines))
		}
		return nil, nil, 0, out
	}
	return set, slices.Sorted(maps.Keys(policies)), rules, nil
}

var rulePath = regexp.MustCompile(`^policies\.(.+?)\[(\d+)\]`)

// placeError formats one Compile problem as FILE:LINE: PATH: problem, with
// the rule's name when it has one.
func placeError(e error, policies map[string][]PolicyRuleConfig, name, prefix string, lines map[string]int) error {
	var fe *policy.FieldError
	if !errors.As(e, &fe) {
		return fmt.Errorf("%s: %s%w", name, prefix, e)
	}
	line := lineOf(lines, prefix+fe.Path)
	if line == 0 {
		line = lineOf(lines, strings.TrimSuffix(prefix, "."))
	}
	rule := ""
	if m := rulePath.FindStringSubmatch(fe.Path); m != nil {
		i, _ := strconv.Atoi(m[2])
		if rs := policies[m[1]]; i < len(rs) && rs[i].Name != "" {
			if rule = fmt.Sprintf("rule %q", rs[i].Name); strings.Contains(fe.Err.Error(), rule) {
				rule = "" // the problem names it already
			} else {
				rule = " (" + rule + ")"
			}
		}
	}
	return fmt.Errorf("%s:%d: %s%s: %w%s", name, line, prefix, fe.Path, fe.Err, rule)
}

// spec is the rule as the policy package reads it.
func (r PolicyRuleConfig) spec() policy.RuleSpec {
	return policy.RuleSpec{
		Name: r.Name,
		Match: policy.MatchSpec{Host: r.Match.Host, Path: r.Match.Path, PathPrefix: r.Match.PathPrefix,
			PathRegex: r.Match.PathRegex, Methods: slices.Clone(r.Match.Methods)},
		Access:        r.Access,
		RejectInvalid: r.RejectInvalid,
		Require: policy.Require{
			Issuers:   slices.Clone(r.Require.Issuers),
			Audiences: slices.Clone(r.Require.Audiences),
			Scopes:    policy.AnyAll{AllOf: slices.Clone(r.Require.Scopes.AllOf), AnyOf: slices.Clone(r.Require.Scopes.AnyOf)},
			Roles:     policy.AnyAll{AllOf: slices.Clone(r.Require.Roles.AllOf), AnyOf: slices.Clone(r.Require.Roles.AnyOf)},
			When:      r.Require.When,
		},
		Shadow:       r.Shadow,
		Headers:      maps.Clone(r.Headers),
		ForwardToken: r.ForwardToken,
	}
}
