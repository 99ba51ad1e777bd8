package main

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tokengate/tokengate/extauthz/token"
)

// configKeys lists every key of t by YAML path: a.b, and a[].b inside a
// list of sections. Maps and lists of values are leaves.
func configKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := prefix + name
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct && ft != durationType:
			keys = append(keys, configKeys(ft, p+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, configKeys(ft.Elem(), p+"[].")...)
		default:
			keys = append(keys, p)
		}
	}
	return keys
}

// defaultWhenEmpty are the keys whose empty value means the verifiers'
// default algorithms.
var defaultWhenEmpty = []string{"issuers[].algorithms", "webhooks.fusionauth.signing_key.algorithms"}

// configDefaults formats every key's default as the code has it: the
// default configuration, each list element's own defaults, and the
// verifiers' default algorithms where an empty list means them. "" is no
// default.
func configDefaults() map[string]string {
	out := map[string]string{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fv, p := v.Field(i), prefix+name
			switch {
			case f.Type.Kind() == reflect.Struct && f.Type != durationType:
				walk(fv, p+".")
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				elem := reflect.New(f.Type.Elem())
				if d, ok := elem.Interface().(defaulter); ok {
					d.setDefaults()
				}
				walk(elem.Elem(), p+"[].")
			default:
				out[p] = formatValue(fv)
			}
		}
	}
	walk(reflect.ValueOf(defaultConfig()), "")
	for _, k := range defaultWhenEmpty {
		out[k] = strings.Join(token.DefaultAlgorithms, " ")
	}
	return out
}

func formatValue(v reflect.Value) string {
	if v.Type() == durationType {
		return shortDuration(time.Duration(v.Int()))
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'f', -1, 64)
	case reflect.Slice:
		var parts []string
		for i := range v.Len() {
			parts = append(parts, formatValue(v.Index(i)))
		}
		return strings.Join(parts, " ")
	case reflect.Map:
		var parts []string
		for _, k := range v.MapKeys() {
			parts = append(parts, fmt.Sprintf("%v: %v", k, v.MapIndex(k)))
		}
		slices.Sort(parts)
		return strings.Join(parts, ", ")
	}
	return fmt.Sprint(v.Interface())
}

// shortDuration writes 15m, not 15m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

var backticked = regexp.MustCompile("`([^`]*)`")

// readmeConfigRows returns the configuration reference's rows: key → the
// default column.
func readmeConfigRows(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Configuration reference\n")
	if !ok {
		t.Fatal("README.md has no \"## Configuration reference\" section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string]string{}
	for line := range strings.SplitSeq(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		m := backticked.FindAllStringSubmatch(cells[1], -1)
		if len(m) != 1 {
			t.Errorf("README row %q: want exactly one key in the first column", line)
			continue
		}
		key := m[0][1]
		if _, dup := rows[key]; dup {
			t.Errorf("README documents %s twice", key)
		}
		rows[key] = strings.TrimSpace(cells[2])
	}
	return rows
}

// TestReadmeConfigReference: the README's configuration reference has a row
// for every key of Config, with the code's default, and none for a key
// that does not exist.
func TestReadmeConfigReference(t *testing.T) {
	rows := readmeConfigRows(t)
	defaults := configDefaults()
	keys := configKeys(reflect.TypeFor[Config](), "")
	for _, k := range keys {
		cell, ok := rows[k]
		if !ok {
			t.Errorf("README: %s is not documented (default %q)", k, defaults[k])
			continue
		}
		want := defaults[k]
		if want == "" {
			if !strings.HasPrefix(cell, "—") {
				t.Errorf("README: %s has no default; its default column %q should start with —", k, cell)
			}
			continue
		}
		m := backticked.FindStringSubmatch(cell)
		if m == nil || m[1] != want {
			t.Errorf("README: %s default column %q; want it to start with `%s`", k, cell, want)
		}
	}
	for k := range rows {
		if !slices.Contains(keys, k) {
			t.Errorf("README documents %s, which is not a configuration key", k)
		}
	}
}

// TestExampleConfigListsEveryKey: tokengate.example.yaml loads, has every
// key, and each value is the default unless its own comment (on its line or
// just above it) says it is a sample. A mark is not inherited: the keys of
// a sample section (the issuer entry) that show defaults are compared too.
func TestExampleConfigListsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../tokengate.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	defaults := configDefaults()
	seen := map[string]bool{}
	var walk func(n *yaml.Node, typ reflect.Type, path string, sample bool)
	walk = func(n *yaml.Node, typ reflect.Type, path string, sample bool) {
		switch {
		case typ.Kind() == reflect.Struct && typ != durationType:
			fields := yamlFields(typ)
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				idx, ok := fields[k.Value]
				if !ok {
					t.Errorf("example: %s%s is not a key", path, k.Value)
					continue
				}
				marked := strings.Contains(k.HeadComment+k.LineComment+v.LineComment, "sample")
				walk(v, typ.Field(idx).Type, path+k.Value+".", marked)
			}
		case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Struct:
			for _, item := range n.Content {
				walk(item, typ.Elem(), strings.TrimSuffix(path, ".")+"[].", false)
			}
		default:
			key := strings.TrimSuffix(path, ".")
			seen[key] = true
			v := reflect.New(typ)
			if typ == durationType {
				d, err := time.ParseDuration(n.Value)
				if err != nil {
					t.Errorf("example: %s: %v", key, err)
					return
				}
				v.Elem().SetInt(int64(d))
			} else if err := n.Decode(v.Interface()); err != nil {
				t.Errorf("example: %s: %v", key, err)
				return
			}
			got := formatValue(v.Elem())
			if sample || got == defaults[key] || got == "" && slices.Contains(defaultWhenEmpty, key) {
				return
			}
			t.Errorf("example: %s is %q, not the default %q, and no comment of its own says it is a sample", key, got, defaults[key])
		}
	}
	walk(doc.Content[0], reflect.TypeFor[Config](), "", false)
	for _, k := range configKeys(reflect.TypeFor[Config](), "") {
		if !seen[k] {
			t.Errorf("example: %s is missing", k)
		}
	}
	if _, err := loadConfig(strings.NewReader(string(b)), noEnv); err != nil {
		t.Errorf("tokengate.example.yaml does not load: %v", err)
	}
}
