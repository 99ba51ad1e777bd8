package policy

import (
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
)

// whenCostLimit bounds one evaluation of a When: CEL's runtime cost, about
// one unit per operation and per element visited. 10,000 lets a condition
// scan claims of a few hundred elements and stops a pathological one (a
// nested comprehension over a large claim) within microseconds; the
// evaluation then fails, and so does the requirement.
const whenCostLimit = 10000

// celEnv declares what a When reads: claims, the token's claims as the
// verifier parsed them (JSON: numbers are doubles, hence cross-type numeric
// comparisons), and request: method (as sent), host (lower case, without
// its port), path (normalised, as the rules match it) and headers
// (lower-case names; empty unless the caller built them, see
// Set.NeedsHeaders). Both are maps of dyn, so that a missing claim is an
// evaluation error, never a silent false: `has(claims.x)` and
// `"x" in request.headers` test for presence.
type celEnv struct{ env *cel.Env }

func newCELEnv() (*celEnv, error) {
	env, err := cel.NewEnv(
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("request", cel.MapType(cel.StringType, cel.DynType)),
		// JSON numbers are doubles: claims.level > 2 must work.
		cel.CrossTypeNumericComparisons(true),
	)
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	return &celEnv{env: env}, nil
}

// when is a compiled When.
type when struct {
	prg cel.Program
	// headers: the expression reads request.headers, so the caller must
	// build them (a conservative reading: it names "headers" anywhere).
	headers bool
}

// compile parses and type-checks src, which must be a bool. An error
// names the line and column of each problem.
func (e *celEnv) compile(src string) (*when, error) {
	ast, iss := e.env.Compile(src)
	if iss != nil && iss.Err() != nil {
		var msgs []string
		for _, ce := range iss.Errors() {
			msgs = append(msgs, fmt.Sprintf("%d:%d: %s", ce.Location.Line(), ce.Location.Column()+1, ce.Message))
		}
		return nil, errors.New("cel: " + strings.Join(msgs, "; "))
	}
	switch t := ast.OutputType(); {
	case t.IsExactType(cel.BoolType):
	case t.IsExactType(cel.DynType):
		return nil, fmt.Errorf("cel: the expression's type is dyn, not bool: compare it (claims.admin == true), or convert it (bool(claims.admin))")
	default:
		return nil, fmt.Errorf("cel: the expression is a %s, not a bool", t)
	}
	prg, err := e.env.Program(ast, cel.CostLimit(whenCostLimit))
	if err != nil {
		return nil, fmt.Errorf("cel: %w", err)
	}
	return &when{prg: prg, headers: strings.Contains(src, "headers")}, nil
}

// eval evaluates the condition; an error (a missing claim, a wrong type,
// the cost limit) fails it.
func (w *when) eval(claims map[string]any, request map[string]any) (bool, error) {
	if claims == nil {
		claims = map[string]any{}
	}
	out, _, err := w.prg.Eval(map[string]any{"claims": claims, "request": request})
	if err != nil {
		return false, fmt.Errorf("when: %w", err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("when: the result is %s, not a bool", out.Type())
	}
	return b, nil
}
