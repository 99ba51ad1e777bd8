package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// decodeYAML decodes one YAML document over dst (a pointer to a struct:
// the configuration, or a policy file) key by key, so that every problem is
// found, each with its YAML path (issuers[0].leeway): unknown keys, keys
// given twice, values of the wrong type, a second document. An absent or
// null key keeps its default. Merge keys (<<: *anchor) merge as YAML says:
// a mapping's own keys win. Each element of a list of sections starts from
// its own defaults (defaulter), so a key that is present always wins, even
// with a zero value. Each problem is a *decodeProblem. lines, when not nil,
// gets the line of every path decoded, so that problems found later (a
// policy that does not compile) can name their line too. err is set only
// when data is not YAML at all.
func decodeYAML(data []byte, dst any, lines map[string]int) (problems []error, err error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return nil, nil // an empty file: the defaults
	case err != nil:
		return nil, err
	}
	d := decoder{lines: lines, budget: aliasExpansion*countNodes(&doc) + 1000}
	if len(doc.Content) > 0 {
		d.value("", doc.Content[0], reflect.ValueOf(dst).Elem())
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, err
	case len(next.Content) == 0 || next.Content[0].Tag == "!!null":
		// A trailing --- with nothing (or only a comment) after it, as
		// generated and concatenated files often end: nothing to read.
	default:
		d.fail("", &next, "a second YAML document (after ---): the file is one document")
	}
	return d.errs, nil
}

// decodeProblem is a key or value that could not be read.
type decodeProblem struct {
	Path string // "" is the whole file
	Line int
	Msg  string
}

func (p *decodeProblem) Error() string { return fmt.Sprintf("%s (line %d)", p.place(), p.Line) }

// place is the problem with its path, without the line.
func (p *decodeProblem) place() string {
	if p.Path == "" {
		return "(the whole file): " + p.Msg
	}
	return p.Path + ": " + p.Msg
}

// lineOf is the line of path as lines recorded it, or that of its nearest
// recorded parent (a problem of methods[2] is on the methods line when the
// list was read as one value); 0 when none is known.
func lineOf(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// defaulter is a configuration section that has defaults of its own when it
// is an element of a list.
type defaulter interface{ setDefaults() }

type decoder struct {
	errs  []error
	lines map[string]int // path → line, when asked for
	// merging holds the mappings whose keys are being gathered, so that a
	// mapping that merges itself (&a {<<: *a}) is an error, not a loop.
	merging map[*yaml.Node]bool
	// budget bounds the values read: aliases read a node again wherever
	// they point to it, and a small file of aliases to aliases could
	// expand to millions of rules (a "billion laughs").
	budget int
	spent  bool
}

// aliasExpansion is how many times over its own nodes a file may read
// through aliases: far more than any real use of anchors, far less than an
// expansion that hurts.
const aliasExpansion = 20

// countNodes counts the nodes of a document as written (an alias is one).
func countNodes(n *yaml.Node) int {
	c := 1
	for _, k := range n.Content {
		c += countNodes(k)
	}
	return c
}

func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, &decodeProblem{Path: path, Line: n.Line, Msg: fmt.Sprintf(format, args...)})
}

// at records that path is on line (the first record wins: a key's line,
// not that of its value's first key).
func (d *decoder) at(path string, line int) {
	if d.lines != nil && path != "" {
		if _, ok := d.lines[path]; !ok {
			d.lines[path] = line
		}
	}
}

var durationType = reflect.TypeFor[time.Duration]()

func (d *decoder) value(path string, n *yaml.Node, v reflect.Value) {
	if d.budget--; d.budget < 0 {
		if !d.spent {
			d.spent = true
			d.fail(path, n, "aliases expand the file to more than %d times its own size: refused", aliasExpansion)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	d.at(path, n.Line)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // unset: keep the default
	}
	switch {
	case v.Kind() == reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		d.value(path, n, p.Elem())
		v.Set(p)
	case v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String:
		d.mapping(path, n, v)
	case v.Type() == durationType:
		d.duration(path, n, v)
	case v.Kind() == reflect.Struct:
		d.section(path, n, v)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if n.Kind != yaml.SequenceNode {
			d.fail(path, n, "want a list")
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			elem := out.Index(i)
			if df, ok := elem.Addr().Interface().(defaulter); ok {
				df.setDefaults()
			}
			p := fmt.Sprintf("%s[%d]", path, i)
			d.at(p, item.Line)
			d.value(p, item, elem)
		}
		v.Set(out)
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.fail(path, n, "%s", typeError(err))
		}
	}
}

// section decodes a mapping into a struct by its fields' yaml tags.
func (d *decoder) section(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "want a mapping of keys")
		return
	}
	fields := yamlFields(v.Type())
	for _, e := range d.entries(path, n, map[string]bool{}) {
		p := e.key.Value
		if path != "" {
			p = path + "." + e.key.Value
		}
		idx, ok := fields[e.key.Value]
		if !ok {
			d.fail(p, e.key, "unknown key")
			continue
		}
		d.at(p, e.key.Line)
		d.value(p, e.val, v.Field(idx))
	}
}

// mapping decodes a mapping into a map with string keys, each value as its
// type says (a list of rules is read rule by rule, with their paths).
func (d *decoder) mapping(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "want a mapping of keys")
		return
	}
	out := reflect.MakeMap(v.Type())
	for _, e := range d.entries(path, n, map[string]bool{}) {
		p := e.key.Value
		if path != "" {
			p = path + "." + e.key.Value
		}
		if e.key.Kind != yaml.ScalarNode {
			d.fail(p, e.key, "want a plain key")
			continue
		}
		d.at(p, e.key.Line)
		elem := reflect.New(v.Type().Elem()).Elem()
		d.value(p, e.val, elem)
		out.SetMapIndex(reflect.ValueOf(e.key.Value).Convert(v.Type().Key()), elem)
	}
	v.Set(out)
}

// entry is one key of a mapping and its value.
type entry struct{ key, val *yaml.Node }

// entries returns the keys of mapping n as YAML merges them: n's own keys,
// then those of its merge keys (<<: *anchor, or a list of them) that n does
// not give itself, an earlier merged mapping winning over a later one. A
// merge key's place among n's keys does not matter. Keys in have are
// already taken and are left out; the rest are added to it. A key given
// twice in one mapping is reported.
func (d *decoder) entries(path string, n *yaml.Node, have map[string]bool) []entry {
	if d.merging == nil {
		d.merging = map[*yaml.Node]bool{}
	}
	d.merging[n] = true
	defer delete(d.merging, n)
	// A merge reads the merged mapping's keys again, as an alias does: it
	// spends the same budget, or merges of merges expand without end.
	if d.budget -= 1 + len(n.Content)/2; d.budget < 0 {
		if !d.spent {
			d.spent = true
			d.fail(path, n, "aliases expand the file to more than %d times its own size: refused", aliasExpansion)
		}
		return nil
	}
	var out []entry
	var merges []*yaml.Node
	own := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" {
			if len(merges) > 0 {
				d.fail(path, k, "<< given twice: merge a list instead (<<: [*a, *b])")
				continue
			}
			merges = append(merges, val)
			continue
		}
		if own[k.Value] {
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			d.fail(p, k, "given twice")
			continue
		}
		own[k.Value] = true
		if !have[k.Value] {
			have[k.Value] = true
			out = append(out, entry{k, val})
		}
	}
	for _, m := range merges {
		if m.Kind == yaml.AliasNode {
			m = m.Alias
		}
		merged := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			merged = m.Content
		}
		for _, mm := range merged {
			if mm.Kind == yaml.AliasNode {
				mm = mm.Alias
			}
			switch {
			case mm.Kind != yaml.MappingNode:
				d.fail(path, mm, "<<: want a mapping or a list of mappings to merge")
				continue
			case d.merging[mm]:
				d.fail(path, mm, "<<: merges a mapping into itself")
				continue
			}
			out = append(out, d.entries(path, mm, have)...)
		}
	}
	return out
}

// duration decodes Go duration syntax (250ms, 30s, 1h); a bare 0 is zero.
func (d *decoder) duration(path string, n *yaml.Node, v reflect.Value) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" && n.Value == "0" {
		v.SetInt(0)
		return
	}
	var dur time.Duration
	var err error
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		dur, err = time.ParseDuration(n.Value)
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" || err != nil {
		d.fail(path, n, "want a duration such as 250ms, 30s, 15m or 1h, got %q", n.Value)
		return
	}
	v.SetInt(int64(dur))
}

// yamlFields maps a struct's yaml keys to its field indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name != "" && name != "-" && f.IsExported() {
			m[name] = i
		}
	}
	return m
}

var yamlLine = regexp.MustCompile(`^line \d+: `)

// typeError is yaml's complaint about one value, without its line (the
// caller adds it) or Go's package names.
func typeError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msgs := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			msgs[i] = yamlLine.ReplaceAllString(e, "")
		}
		return strings.Join(msgs, "; ")
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}
