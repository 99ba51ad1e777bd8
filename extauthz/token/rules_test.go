package token

import (
	"slices"
	"strings"
	"testing"
)

func TestCheckURL(t *testing.T) {
	cases := map[string]struct {
		url       string
		allowHTTP bool
		want      string // "" when accepted, else part of the error
	}{
		"https":                   {url: "https://idp.example/jwks"},
		"http localhost":          {url: "http://localhost:8080/jwks"},
		"http 127.0.0.1":          {url: "http://127.0.0.1/jwks"},
		"http ::1":                {url: "http://[::1]:9000/jwks"},
		"http 127.0.0.2":          {url: "http://127.0.0.2/jwks"},
		"http remote":             {url: "http://idp.example/jwks", want: "plain http"},
		"http remote allowed":     {url: "http://idp.internal/jwks", allowHTTP: true},
		"http localhost.evil":     {url: "http://localhost.evil.example/jwks", want: "plain http"},
		"relative":                {url: "/jwks", want: "not an absolute URL"},
		"no host":                 {url: "https:///jwks", want: "not an absolute URL"},
		"ftp":                     {url: "ftp://idp.example/jwks", want: "unsupported scheme"},
		"ftp even when allowed":   {url: "ftp://idp.example/jwks", allowHTTP: true, want: "unsupported scheme"},
		"plain string, not a URL": {url: "acme.com", want: "not an absolute URL"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := CheckURL(tc.url, tc.allowHTTP)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("CheckURL(%q, %v) = %v, want accepted", tc.url, tc.allowHTTP, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckURL(%q, %v) = %v, want an error with %q", tc.url, tc.allowHTTP, err, tc.want)
			}
		})
	}
}

func TestCheckAlgorithm(t *testing.T) {
	cases := map[string]struct {
		alg  string
		hmac bool
		want string
	}{
		"RS256":             {alg: "RS256"},
		"PS512":             {alg: "PS512"},
		"EdDSA":             {alg: "EdDSA"},
		"HS256 with secret": {alg: "HS256", hmac: true},
		"HS256 no secret":   {alg: "HS256", want: "needs an HMAC secret"},
		"none":              {alg: "none", hmac: true, want: "never allowed"},
		"NONE":              {alg: "NONE", want: "never allowed"},
		"unknown":           {alg: "RS1024", want: "unknown algorithm"},
		"lower case":        {alg: "rs256", want: "unknown algorithm"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := CheckAlgorithm(tc.alg, tc.hmac)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("CheckAlgorithm(%q, %v) = %v, want accepted", tc.alg, tc.hmac, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("CheckAlgorithm(%q, %v) = %v, want an error with %q", tc.alg, tc.hmac, err, tc.want)
			}
		})
	}
}

func TestAlgorithmsDefaults(t *testing.T) {
	for _, a := range slices.Concat(DefaultAlgorithms, HMACAlgorithms) {
		if err := CheckAlgorithm(a, true); err != nil {
			t.Errorf("default %s: %v", a, err)
		}
	}
	if got := Algorithms(nil, false); !slices.Equal(got, DefaultAlgorithms) {
		t.Errorf("no list, no secret: got %v, want %v", got, DefaultAlgorithms)
	}
	if got, want := Algorithms(nil, true), slices.Concat(DefaultAlgorithms, HMACAlgorithms); !slices.Equal(got, want) {
		t.Errorf("no list, a secret: got %v, want %v", got, want)
	}
	if got := Algorithms([]string{"ES256"}, true); !slices.Equal(got, []string{"ES256"}) {
		t.Errorf("a list: got %v, want it as configured", got)
	}
	Algorithms(nil, false)[0] = "changed"
	if DefaultAlgorithms[0] == "changed" {
		t.Error("Algorithms returned DefaultAlgorithms itself; a caller could change the defaults")
	}
}
