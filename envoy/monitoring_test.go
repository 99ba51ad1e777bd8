package envoy_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	promql "github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"

	"github.com/tokengate/tokengate/extauthz"
)

// The alerts (istio/monitoring.yaml) and the Grafana dashboard
// (grafana/tokengate.json) are checked against what tokengate exports:
// every expression parses as PromQL (Prometheus's own parser), every series
// it reads is a family of the README's metrics table (which
// cmd/tokengate's TestMetricsDocumented keeps equal to /metrics) or one of
// the few outside ones below, every label it matches or groups by is one
// that family has, and every label value it names is one the README (or,
// for reasons, the code) lists.

// monitoringFiles are the files the checks read, relative to envoy/.
var monitoringFiles = []string{"grafana/tokengate.json", "istio/monitoring.yaml", "istio/tokengate.yaml"}

// outsideMetrics are the series the alerts read from elsewhere, and where.
var outsideMetrics = map[string]string{
	"up": "Prometheus, per scrape target",
	"kube_deployment_status_replicas_available": "kube-state-metrics",
	"kube_deployment_spec_replicas":             "kube-state-metrics",
}

// targetLabels are the labels Prometheus (through the ServiceMonitor) puts
// on every series it scrapes from tokengate.
var targetLabels = []string{"job", "instance", "namespace", "pod", "service", "container", "endpoint"}

// runbookPrefix is where the alerts' runbook_url points: README anchors.
const runbookPrefix = "https://github.com/tokengate/tokengate/blob/main/README.md#"

// family is one metric family tokengate exports.
type family struct {
	labels    []string // its own labels, from the README's table
	row       string   // the README's row, where the label values are listed
	histogram bool
}

// catalog is what the expressions may read: the series names (a
// histogram's _bucket, _sum and _count) mapped to their family, and the
// README's heading anchors.
type catalog struct {
	series  map[string]string // series name → family name
	family  map[string]family
	anchors map[string]bool
	reasons []string
}

func TestMonitoring(t *testing.T) {
	cat := readCatalog(t)
	for _, p := range checkMonitoring(cat, readMonitoringFiles(t)) {
		t.Errorf("monitoring: %s", p)
	}
}

// TestMonitoringChecksCatchMistakes proves the checks above can fail.
func TestMonitoringChecksCatchMistakes(t *testing.T) {
	cat := readCatalog(t)
	good := readMonitoringFiles(t)
	tests := map[string]mutation{
		"unknown metric in the dashboard": {
			file: "grafana/tokengate.json", old: "sum(rate(tokengate_check_errors_total{", new: "sum(rate(tokengate_check_error_total{",
			want: `unknown metric "tokengate_check_error_total"`,
		},
		"bucket of a gauge": {
			file: "grafana/tokengate.json", old: "max by (kind) (tokengate_revocations{", new: "max by (kind) (tokengate_revocations_bucket{",
			want: `unknown metric "tokengate_revocations_bucket"`,
		},
		"unknown metric in an alert": {
			file: "istio/monitoring.yaml", old: "rate(tokengate_revocation_sync_lag_seconds_bucket{", new: "rate(tokengate_revocation_sync_lag_bucket{",
			want: `unknown metric "tokengate_revocation_sync_lag_bucket"`,
		},
		"unbalanced alert": {
			file: "istio/monitoring.yaml", old: `(tokengate_revocation_staleness_seconds{job="tokengate"}) > 20`, new: `(tokengate_revocation_staleness_seconds{job="tokengate"} > 20`,
			want: "TokengateRevocationsStale: expr:",
		},
		"unbalanced dashboard query": {
			file: "grafana/tokengate.json", old: "clamp_max(tokengate_revocation_staleness_seconds{", new: "clamp_max((tokengate_revocation_staleness_seconds{",
			want: `panel "Revocation staleness per replica"`,
		},
		"unknown function": {
			file: "grafana/tokengate.json", old: "histogram_quantile(0.99, sum by (le) (rate(tokengate_check_duration", new: "histogram_quantil(0.99, sum by (le) (rate(tokengate_check_duration",
			want: "histogram_quantil",
		},
		"malformed matcher": {
			file: "istio/monitoring.yaml", old: `up{job="tokengate"} == 0`, new: `up{job=tokengate} == 0`,
			want: "TokengateDown: expr:",
		},
		"unknown label": {
			file: "grafana/tokengate.json", old: "sum by (reason) (rate(tokengate_check_decisions_total", new: "sum by (reasons) (rate(tokengate_check_decisions_total",
			want: `"reasons"`,
		},
		"label of another family": {
			file: "istio/monitoring.yaml", old: `tokengate_jwks_fetches_total{job="tokengate", result="error"}`, new: `tokengate_jwks_fetches_total{job="tokengate", reason="error"}`,
			want: `label "reason"`,
		},
		"unknown reason": {
			file: "istio/monitoring.yaml", old: "revocations_stale|logout_failed", new: "revocation_stale|logout_failed",
			want: `"revocation_stale"`,
		},
		"unknown result": {
			file: "istio/monitoring.yaml", old: `result="rejected"`, new: `result="rejects"`,
			want: `"rejects"`,
		},
		"quantile without le": {
			file: "grafana/tokengate.json", old: "histogram_quantile(0.99, sum by (le) (rate(tokengate_check_duration", new: "histogram_quantile(0.99, sum by (pod) (rate(tokengate_check_duration",
			want: "le",
		},
		"no runbook": {
			file: "istio/monitoring.yaml", old: "        runbook_url: \"https://github.com/tokengate/tokengate/blob/main/README.md#tokengatedown\"\n", new: "",
			want: "TokengateDown: runbook_url",
		},
		"runbook anchor missing": {
			file: "istio/monitoring.yaml", old: "README.md#tokengatedown", new: "README.md#tokengate-down",
			want: "TokengateDown: runbook_url",
		},
		"misspelt field": {
			file: "istio/monitoring.yaml", old: "      for: 2m\n", new: "      for: 2m\n      severity: critical\n",
			want: "field severity not found",
		},
		"broken annotation template": {
			file: "istio/monitoring.yaml", old: "{{ $labels.pod }} has not read", new: "{{ $labels.pod } has not read",
			want: "TokengateRevocationsStale: annotations.summary",
		},
		"unknown template function": {
			file: "istio/monitoring.yaml", old: "{{ $value | humanizeDuration }} after", new: "{{ $value | humanizeDurations }} after",
			want: "humanizeDurations",
		},
		"job renamed": {
			file: "istio/monitoring.yaml", old: `up{job="tokengate"} == 0`, new: `up{job="tokengate-http"} == 0`,
			want: `up{job="tokengate-http"}`,
		},
		"dashboard job renamed": {
			file: "grafana/tokengate.json", old: `max by (kind) (tokengate_revocations{job=\"tokengate\"`, new: `max by (kind) (tokengate_revocations{job=\"tg\"`,
			want: `job="tg"`,
		},
		"deployment renamed": {
			file: "istio/monitoring.yaml", old: `kube_deployment_spec_replicas{namespace="tokengate", deployment="tokengate"}`, new: `kube_deployment_spec_replicas{namespace="tokengate", deployment="tokengate-v2"}`,
			want: `deployment="tokengate-v2"`,
		},
		"no for": {
			file: "istio/monitoring.yaml", old: "      for: 2m\n", new: "",
			want: "TokengateDown: for",
		},
		"no severity": {
			file: "istio/monitoring.yaml", old: "      for: 2m\n      labels: {severity: critical}\n", new: "      for: 2m\n",
			want: "TokengateDown: severity",
		},
		"no summary": {
			file: "istio/monitoring.yaml", old: `        summary: "Prometheus cannot scrape tokengate {{ $labels.pod }}"` + "\n", new: "",
			want: "TokengateDown: annotations.summary",
		},
		"staleness alert after the denials start": {
			file: "istio/monitoring.yaml", old: `{job="tokengate"}) > 20`, new: `{job="tokengate"}) > 45`,
			want: "max_staleness",
		},
		"max_staleness lowered under the alert": {
			file: "istio/tokengate.yaml", old: "max_staleness: 30s", new: "max_staleness: 15s",
			want: "max_staleness",
		},
		"webhook alert gone": {
			file: "istio/monitoring.yaml", old: "tokengate_webhook_events_total{", new: "tokengate_check_decisions_total{",
			want: "tokengate_webhook_events_total",
		},
		"dashboard without latency": {
			file: "grafana/tokengate.json", old: "tokengate_check_duration_seconds_bucket", new: "tokengate_store_operation_duration_seconds_bucket",
			want: "no panel reads tokengate_check_duration_seconds",
		},
		"datasource not a variable": {
			file: "grafana/tokengate.json", old: `"name": "DS_PROMETHEUS"`, new: `"name": "DS_PROM"`,
			want: "DS_PROMETHEUS",
		},
	}
	catchMistakes(t, good, tests, func(files map[string][]byte) []string { return checkMonitoring(cat, files) })
}

func readMonitoringFiles(t *testing.T) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range monitoringFiles {
		files[name] = readFile(t, name)
	}
	return files
}

// readCatalog reads the metric families from the README's metrics table,
// which families are histograms from the code (the README does not say),
// and the README's anchors.
func readCatalog(t *testing.T) catalog {
	t.Helper()
	readme := string(readFile(t, "../README.md"))
	cat := catalog{series: map[string]string{}, family: map[string]family{}, anchors: anchors(readme)}
	for _, r := range extauthz.Reasons() {
		cat.reasons = append(cat.reasons, r.String())
	}

	_, section, ok := strings.Cut(readme, "\n## Metrics and health\n")
	if !ok {
		t.Fatal(`README has no "## Metrics and health" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	name := regexp.MustCompile("^`(tokengate_[a-z0-9_]+)(?:\\{([a-z_,]*)\\})?`$")
	for line := range strings.Lines(section) {
		if !strings.HasPrefix(line, "| `tokengate_") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		m := name.FindStringSubmatch(strings.TrimSpace(cells[0]))
		if m == nil {
			t.Fatalf("metrics row %q: the first cell must be one `family{labels}`", line)
		}
		f := family{row: line}
		if m[2] != "" {
			f.labels = strings.Split(m[2], ",")
		}
		cat.family[m[1]] = f
	}
	if len(cat.family) == 0 {
		t.Fatal("README's metrics table: no tokengate_ rows")
	}

	histograms := histogramFamilies(t, "..")
	if len(histograms) == 0 {
		t.Fatal("found no prometheus.HistogramOpts in the code")
	}
	for _, h := range histograms {
		f, ok := cat.family[h]
		if !ok {
			t.Errorf("histogram %s (in the code) is not in the README's metrics table", h)
			continue
		}
		f.histogram = true
		cat.family[h] = f
	}
	for n, f := range cat.family {
		cat.series[n] = n
		if f.histogram {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				cat.series[n+suffix] = n
			}
		}
	}
	return cat
}

// histogramFamilies returns the names given in prometheus.HistogramOpts
// literals in the module's non-test Go files under root.
func histogramFamilies(t *testing.T, root string) []string {
	t.Helper()
	var names []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "HistogramOpts" {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
				return true
			}
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if k, isIdent := kv.Key.(*ast.Ident); !ok || !isIdent || k.Name != "Name" {
					continue
				}
				if v, ok := kv.Value.(*ast.BasicLit); ok && v.Kind == token.STRING {
					s, _ := strconv.Unquote(v.Value)
					names = append(names, s)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// anchors are the README's headings as GitHub links them: lower case,
// punctuation but '-' and '_' dropped, spaces as '-', repeats numbered.
func anchors(readme string) map[string]bool {
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	inFence := false
	for line := range strings.Lines(readme) {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		slug := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(title), ""), " ", "-")
		a := slug
		for i := 1; out[a]; i++ {
			a = fmt.Sprintf("%s-%d", slug, i)
		}
		out[a] = true
	}
	return out
}

// rule is one alerting rule of the PrometheusRule: every field the
// Operator's Rule has, so that a misspelt one is an error.
type rule struct {
	Alert         string            `yaml:"alert"`
	Record        string            `yaml:"record"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for"`
	KeepFiringFor string            `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

type prometheusRuleSpec struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

// dashboard is the part of Grafana's JSON model the checks read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name       string      `json:"name"`
			Type       string      `json:"type"`
			Query      any         `json:"query"` // a string, or an object with "query"
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Datasource *datasource `json:"datasource"`
		Expr       string      `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dsVariable is the dashboard's data source: a template variable, so that
// the dashboard imports into any Grafana and picks its Prometheus there.
const dsVariable = "DS_PROMETHEUS"

// grafanaMacros stand for durations Grafana fills in; any duration parses.
var grafanaMacros = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// labelValuesQuery is a Grafana variable query: label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// What the issue asks the dashboard to show, and the alerts to watch: the
// families each must read.
var (
	dashboardMust = []string{
		"tokengate_check_decisions_total", "tokengate_check_duration_seconds", "tokengate_revocation_sync_lag_seconds",
		"tokengate_revocation_staleness_seconds", "tokengate_revocations", "tokengate_jwks_fetches_total",
		"tokengate_webhook_events_total", "tokengate_policy_decisions_total",
	}
	alertsMust = []string{
		"tokengate_revocation_staleness_seconds", "tokengate_revocation_sync_lag_seconds", "tokengate_jwks_fetches_total",
		"tokengate_webhook_events_total", "tokengate_check_decisions_total", "kube_deployment_status_replicas_available", "up",
	}
	// alertReasonsMust are the reasons the denials alert must name.
	alertReasonsMust = []string{"revocations_stale", "logout_failed"}
)

// checkMonitoring reports every problem in the dashboard and the alerts.
func checkMonitoring(cat catalog, files map[string][]byte) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	w, err := readWorkload(files["istio/tokengate.yaml"])
	if err != nil {
		bad("istio/tokengate.yaml: %v", err)
	}

	// The alerts.
	docs, err := decodeAll(files["istio/monitoring.yaml"])
	if err != nil {
		bad("istio/monitoring.yaml: %v", err)
	}
	var rules []rule
	for _, o := range docs {
		if o.Kind != "PrometheusRule" {
			continue
		}
		var s prometheusRuleSpec
		if err := decodeStrict(&o.Spec, &s); err != nil {
			bad("PrometheusRule %s: %v", o.Metadata.Name, err)
			continue
		}
		for _, g := range s.Groups {
			rules = append(rules, g.Rules...)
		}
	}
	if len(rules) == 0 {
		bad("PrometheusRule: no rules")
	}
	alertUses := usage{families: map[string]bool{}, values: map[string]map[string]bool{}}
	for _, r := range rules {
		where := "alert " + r.Alert
		if r.Alert == "" {
			bad("PrometheusRule: a rule without alert (expr %q)", r.Expr)
		}
		expr, ps := checkExpr(cat, where+": expr", r.Expr, &alertUses)
		problems = append(problems, ps...)
		problems = append(problems, w.check(where+": expr", expr)...)
		if d, err := time.ParseDuration(r.For); err != nil || d <= 0 {
			bad("%s: for: got %q, want a duration (an alert that fires on one evaluation pages on every blip)", where, r.For)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			bad("%s: severity: got %q, want critical or warning", where, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				bad("%s: annotations.%s: missing", where, a)
			}
		}
		for _, a := range slices.Sorted(maps.Keys(r.Annotations)) {
			if err := parseAlertTemplate(r.Annotations[a]); err != nil {
				bad("%s: annotations.%s: %v", where, a, err)
			}
		}
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookPrefix)
		if !ok || !cat.anchors[anchor] {
			bad("%s: runbook_url: got %q, want %s<a heading of the README>", where, r.Annotations["runbook_url"], runbookPrefix)
		}
		if expr != nil && slices.Contains(selectorNames(expr), "tokengate_revocation_staleness_seconds") {
			problems = append(problems, checkStalenessThreshold(where, expr, files["istio/tokengate.yaml"])...)
		}
	}
	for _, f := range alertsMust {
		if !alertUses.families[f] {
			bad("alerts: none reads %s", f)
		}
	}
	for _, r := range alertReasonsMust {
		if !alertUses.values["reason"][r] {
			bad("alerts: none counts the denials with reason %q", r)
		}
	}

	// The dashboard.
	var d dashboard
	if err := json.Unmarshal(files["grafana/tokengate.json"], &d); err != nil {
		bad("grafana/tokengate.json: %v", err)
		return problems
	}
	if d.UID == "" || d.Title == "" {
		bad("dashboard: uid %q, title %q: want both", d.UID, d.Title)
	}
	ds := "${" + dsVariable + "}"
	var haveDS bool
	dashUses := usage{families: map[string]bool{}, values: map[string]map[string]bool{}}
	for _, v := range d.Templating.List {
		switch {
		case v.Name == dsVariable:
			haveDS = v.Type == "datasource" && v.Query == "prometheus"
		case v.Type == "query":
			q, _ := v.Query.(string)
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			lv := labelValuesQuery.FindStringSubmatch(q)
			if lv == nil {
				bad("dashboard variable %s: query %q: want label_values(selector, label)", v.Name, q)
				continue
			}
			expr, ps := checkExpr(cat, "dashboard variable "+v.Name, lv[1], &dashUses)
			problems = append(problems, ps...)
			for _, n := range selectorNames(expr) {
				if !cat.labelAllowed(n, lv[2]) {
					bad("dashboard variable %s: label %q: %s has no such label", v.Name, lv[2], n)
				}
			}
			if v.Datasource == nil || v.Datasource.UID != ds {
				bad("dashboard variable %s: datasource: got %v, want uid %s", v.Name, v.Datasource, ds)
			}
		}
	}
	if !haveDS {
		bad("dashboard: no template variable %s of type datasource for prometheus", dsVariable)
	}
	ids := map[int]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("dashboard panel %q", p.Title)
			if ids[p.ID] {
				bad("%s: id %d used twice", where, p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				bad("%s: no targets", where)
			}
			if p.Datasource == nil || p.Datasource.UID != ds {
				bad("%s: datasource: got %v, want uid %s", where, p.Datasource, ds)
			}
			for i, tg := range p.Targets {
				if tg.Datasource != nil && tg.Datasource.UID != ds {
					bad("%s: targets[%d].datasource: got %v, want uid %s", where, i, tg.Datasource, ds)
				}
				what := fmt.Sprintf("%s: targets[%d]", where, i)
				expr, ps := checkExpr(cat, what, tg.Expr, &dashUses)
				problems = append(problems, ps...)
				problems = append(problems, w.check(what, expr)...)
			}
		}
	}
	walk(d.Panels)
	for _, f := range dashboardMust {
		if !dashUses.families[f] {
			bad("dashboard: no panel reads %s", f)
		}
	}
	return problems
}

// usage collects the families the expressions read, and the label values
// they match (label → values).
type usage struct {
	families map[string]bool
	values   map[string]map[string]bool
}

func (u *usage) value(label, v string) {
	if u.values[label] == nil {
		u.values[label] = map[string]bool{}
	}
	u.values[label][v] = true
}

// checkExpr parses one PromQL expression and checks its series, labels and
// label values against the catalog.
func checkExpr(cat catalog, where, text string, u *usage) (promql.Expr, []string) {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, where+": "+fmt.Sprintf(format, args...)) }
	if strings.TrimSpace(text) == "" {
		bad("empty")
		return nil, problems
	}
	expr, err := promql.NewParser(promql.Options{}).ParseExpr(grafanaMacros.Replace(text))
	if err != nil {
		bad("%v", err)
		return nil, problems
	}
	promql.Inspect(expr, func(n promql.Node, _ []promql.Node) error {
		switch n := n.(type) {
		case *promql.VectorSelector:
			name := selectorName(n)
			fam, ours := cat.series[name]
			if _, outside := outsideMetrics[name]; !ours && !outside {
				bad("unknown metric %q: not in the README's metrics table (nor one of %q)", name, keys(outsideMetrics))
				return nil
			}
			u.families[cmp.Or(fam, name)] = true
			for _, m := range n.LabelMatchers {
				if m.Name == labels.MetricName {
					continue
				}
				if ours && !cat.labelAllowed(name, m.Name) {
					bad("%s: label %q: the family has %q (and the target labels %q)", name, m.Name, cat.family[fam].labels, targetLabels)
					continue
				}
				for _, v := range matcherValues(m) {
					u.value(m.Name, v)
					if ours && slices.Contains(cat.family[fam].labels, m.Name) && !cat.valueKnown(fam, m.Name, v) {
						bad("%s: %s=%q: not a value the README (or extauthz.Reasons, for reason) lists", name, m.Name, v)
					}
				}
			}
		case *promql.AggregateExpr:
			if n.Without {
				return nil
			}
			// Unknown series are reported above; group only over known ones.
			known := slices.DeleteFunc(selectorNames(n.Expr), func(s string) bool {
				_, ours := cat.series[s]
				_, outside := outsideMetrics[s]
				return !ours && !outside
			})
			for _, l := range n.Grouping {
				if len(known) > 0 && !slices.ContainsFunc(known, func(s string) bool { return cat.labelAllowed(s, l) }) {
					bad("%s by (%s): label %q: none of %q has it", n.Op, strings.Join(n.Grouping, ", "), l, known)
				}
			}
		case *promql.Call:
			if n.Func.Name != "histogram_quantile" || len(n.Args) != 2 {
				return nil
			}
			promql.Inspect(n.Args[1], func(m promql.Node, _ []promql.Node) error {
				if a, ok := m.(*promql.AggregateExpr); ok && !a.Without && !slices.Contains(a.Grouping, "le") {
					bad("histogram_quantile over %s by (%s): want le kept, or every quantile is NaN", a.Op, strings.Join(a.Grouping, ", "))
				}
				return nil
			})
		}
		return nil
	})
	return expr, problems
}

// workload is what the expressions must name to find tokengate: the
// Service (the ServiceMonitor's job label is the Service's name) and the
// Deployment (kube-state-metrics' namespace and deployment labels).
type workload struct {
	job, namespace, deployment string
}

func readWorkload(manifest []byte) (workload, error) {
	var w workload
	docs, err := decodeAll(manifest)
	if err != nil {
		return w, err
	}
	for _, o := range docs {
		switch o.Kind {
		case "Service":
			w.job = o.Metadata.Name
		case "Deployment":
			w.namespace, w.deployment = o.Metadata.Namespace, o.Metadata.Name
		}
	}
	if w.job == "" || w.deployment == "" {
		return w, fmt.Errorf("want a Service and a Deployment, got %+v", w)
	}
	return w, nil
}

// check reports every job, namespace or deployment an expression matches
// exactly that is not tokengate's: such a selector matches nothing.
func (w workload) check(where string, expr promql.Expr) []string {
	if expr == nil || w.job == "" {
		return nil
	}
	var problems []string
	promql.Inspect(expr, func(n promql.Node, _ []promql.Node) error {
		vs, ok := n.(*promql.VectorSelector)
		if !ok {
			return nil
		}
		kube := strings.HasPrefix(selectorName(vs), "kube_deployment_")
		for _, m := range vs.LabelMatchers {
			if m.Type != labels.MatchEqual {
				continue
			}
			want := map[string]string{"job": w.job}
			if kube {
				want = map[string]string{"namespace": w.namespace, "deployment": w.deployment}
			}
			if v, ok := want[m.Name]; ok && m.Value != v {
				problems = append(problems, fmt.Sprintf("%s: %s{%s=%q}: want %q (tokengate.yaml)", where, selectorName(vs), m.Name, m.Value, v))
			}
		}
		if kube && !slices.ContainsFunc(vs.LabelMatchers, func(m *labels.Matcher) bool { return m.Name == "deployment" }) {
			problems = append(problems, fmt.Sprintf("%s: %s: want deployment=%q, or it reads every Deployment", where, selectorName(vs), w.deployment))
		}
		return nil
	})
	return problems
}

// checkStalenessThreshold checks that the staleness alert fires before
// the replica starts denying: its threshold is below the ConfigMap's
// revocation.max_staleness, and not so low that a poll or two trips it.
func checkStalenessThreshold(where string, expr promql.Expr, manifest []byte) []string {
	cfg, err := configMapConfig(manifest)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", where, err)}
	}
	max := cfg.Revocation.MaxStaleness
	if max == 0 {
		max = 30 * time.Second // tokengate's default
	}
	var thresholds []float64
	promql.Inspect(expr, func(n promql.Node, _ []promql.Node) error {
		if b, ok := n.(*promql.BinaryExpr); ok && b.Op.IsComparisonOperator() {
			if num, ok := b.RHS.(*promql.NumberLiteral); ok {
				thresholds = append(thresholds, num.Val)
			}
		}
		return nil
	})
	if len(thresholds) != 1 {
		return []string{fmt.Sprintf("%s: got %d thresholds (%v), want one: staleness > N", where, len(thresholds), thresholds)}
	}
	if th := time.Duration(thresholds[0] * float64(time.Second)); th >= max || th < max/2 {
		return []string{fmt.Sprintf("%s: threshold %s: want at least half of revocation.max_staleness and below it (%s): past it every check is denied", where, th, max)}
	}
	return nil
}

// alertTemplateFuncs are the functions Prometheus gives alert templates
// besides text/template's own; only their names matter to parsing.
var alertTemplateFuncs = template.FuncMap{}

func init() {
	for _, name := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage",
		"humanizeTimestamp", "toTime", "title", "toUpper", "toLower", "first", "label", "value", "query",
		"reReplaceAll", "match", "args", "tmpl", "safeHtml", "pathPrefix", "externalURL", "graphLink",
		"tableLink", "sortByLabel", "strvalue", "stripPort", "stripDomain", "parseDuration", "now", "urlUnescape"} {
		alertTemplateFuncs[name] = func(...any) any { return nil }
	}
}

// parseAlertTemplate parses an annotation as Prometheus does: text/template
// with $labels, $externalLabels and $value defined.
func parseAlertTemplate(text string) error {
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
	_, err := template.New("annotation").Funcs(alertTemplateFuncs).Parse(defs + text)
	return err
}

// decodeStrict decodes n into v, refusing fields v does not have.
func decodeStrict(n *yaml.Node, v any) error {
	data, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(v)
}

func configMapConfig(manifest []byte) (tokengateConfig, error) {
	var cfg tokengateConfig
	docs, err := decodeAll(manifest)
	if err != nil {
		return cfg, err
	}
	for _, o := range docs {
		if text, ok := o.Data["tokengate.yaml"]; ok {
			return cfg, yaml.Unmarshal([]byte(text), &cfg)
		}
	}
	return cfg, fmt.Errorf("no ConfigMap with tokengate.yaml")
}

func (c catalog) labelAllowed(series, label string) bool {
	fam, ours := c.series[series]
	if !ours {
		_, outside := outsideMetrics[series]
		return outside
	}
	return slices.Contains(targetLabels, label) || slices.Contains(c.family[fam].labels, label) ||
		label == "le" && series == fam+"_bucket"
}

// valueKnown reports whether the README's row lists v (in backticks) for
// the family, or, for reason, whether it is one of extauthz's reasons.
func (c catalog) valueKnown(fam, label, v string) bool {
	if label == "reason" {
		return slices.Contains(c.reasons, v)
	}
	return strings.Contains(c.family[fam].row, "`"+v+"`")
}

var literalAlternatives = regexp.MustCompile(`^[a-zA-Z0-9_-]+(\|[a-zA-Z0-9_-]+)*$`)

// matcherValues are the values a matcher names: its value, or the
// alternatives of a regex that is only literal words joined by '|'. Other
// regexes and Grafana variables name nothing checkable.
func matcherValues(m *labels.Matcher) []string {
	if strings.Contains(m.Value, "$") {
		return nil
	}
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		return []string{m.Value}
	}
	if literalAlternatives.MatchString(m.Value) {
		return strings.Split(m.Value, "|")
	}
	return nil
}

func selectorName(vs *promql.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// selectorNames are the series names an expression reads.
func selectorNames(expr promql.Node) []string {
	var out []string
	if expr == nil {
		return nil
	}
	promql.Inspect(expr, func(n promql.Node, _ []promql.Node) error {
		if vs, ok := n.(*promql.VectorSelector); ok && !slices.Contains(out, selectorName(vs)) {
			out = append(out, selectorName(vs))
		}
		return nil
	})
	return out
}
