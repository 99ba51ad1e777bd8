package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/tokengate/tokengate/extauthz"
	"github.com/tokengate/tokengate/extauthz/intake"
	"github.com/tokengate/tokengate/extauthz/token"
	"github.com/tokengate/tokengate/policy"
	"github.com/tokengate/tokengate/storage"
)

// Config is tokengate's configuration file. Every key is documented in
// tokengate.example.yaml.
type Config struct {
	Listen              ListenConfig               `yaml:"listen"`
	Log                 LogConfig                  `yaml:"log"`
	Cache               CacheConfig                `yaml:"cache"`
	JWKS                JWKSConfig                 `yaml:"jwks"`
	Tokens              TokensConfig               `yaml:"tokens"`
	Issuers             []IssuerConfig             `yaml:"issuers"`
	ClaimHeaders        map[string]string          `yaml:"claim_headers"`
	Admin               AdminConfig                `yaml:"admin"`
	Webhooks            WebhooksConfig             `yaml:"webhooks"`
	Backchannel         BackchannelConfig          `yaml:"backchannel_logout"`
	LogoutRoutes        []LogoutRouteConfig        `yaml:"logout_routes"`
	IntrospectionRoutes []IntrospectionRouteConfig `yaml:"introspection_routes"`
	Storage             StorageConfig              `yaml:"storage"`
	Revocation          RevocationConfig           `yaml:"revocation"`
	Shutdown            ShutdownConfig             `yaml:"shutdown"`
	Policy              PolicyConfig               `yaml:"policy"`
	AuthzHTTP           AuthzHTTPConfig            `yaml:"authz_http"`
}

// AuthzHTTPConfig is the HTTP authorization endpoint (listen.authz_http):
// where it reads the request to authorise from.
type AuthzHTTPConfig struct {
	// Mode: envoy (the request itself), forwarded (X-Forwarded-Method,
	// -Host, -Uri: Caddy, Traefik) or nginx (X-Original-Method, -URI).
	Mode string `yaml:"mode"`
	// PathPrefix (envoy mode): Envoy's http_service path_prefix.
	PathPrefix string `yaml:"path_prefix"`
}

type AdminConfig struct {
	// Token enables the admin API; empty turns it off.
	Token string `yaml:"token"`
}

// LogoutRouteConfig is a route on which a request logs its token out.
type LogoutRouteConfig struct {
	Host       string   `yaml:"host"`
	PathPrefix string   `yaml:"path_prefix"`
	Methods    []string `yaml:"methods"`
	// Revoke lists what goes besides the token itself: session, subject.
	Revoke []string `yaml:"revoke"`
}

// IntrospectionRouteConfig is a route to the IdP's token introspection
// endpoint (RFC 7662), whose form body carries the token to judge.
type IntrospectionRouteConfig struct {
	Host       string   `yaml:"host"`
	PathPrefix string   `yaml:"path_prefix"`
	Methods    []string `yaml:"methods"`
}

// introspectionRoutes builds the introspection routes; errors carry their
// YAML paths.
func (c Config) introspectionRoutes() (*policy.IntrospectionRoutes, error) {
	var out []policy.IntrospectionRoute
	var errs []error
	for i, ir := range c.IntrospectionRoutes {
		r := policy.IntrospectionRoute{Host: ir.Host, PathPrefix: ir.PathPrefix, Methods: slices.Clone(ir.Methods)}
		if err := r.Validate(); err != nil {
			for _, e := range joined(err) {
				errs = append(errs, fmt.Errorf("introspection_routes[%d].%w", i, e))
			}
		}
		out = append(out, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	routes, err := policy.NewIntrospectionRoutes(out)
	if err != nil {
		return nil, fmt.Errorf("introspection_routes: %w", err)
	}
	return routes, nil
}

// tokenSources are the token sources, header names in lower case (as
// Envoy sends them).
func (c Config) tokenSources() []extauthz.TokenSource {
	out := make([]extauthz.TokenSource, 0, len(c.Tokens.Sources))
	for _, ts := range c.Tokens.Sources {
		out = append(out, extauthz.TokenSource{Header: strings.ToLower(ts.Header), Cookie: ts.Cookie})
	}
	return out
}

// logoutRoutes builds the logout routes; errors carry their YAML paths.
func (c Config) logoutRoutes() (*policy.LogoutRoutes, error) {
	var out []policy.LogoutRoute
	var errs []error
	for i, lr := range c.LogoutRoutes {
		r := policy.LogoutRoute{Host: lr.Host, PathPrefix: lr.PathPrefix, Methods: slices.Clone(lr.Methods)}
		if err := r.Validate(); err != nil {
			// One problem a line, each with its YAML path.
			for _, e := range joined(err) {
				errs = append(errs, fmt.Errorf("logout_routes[%d].%w", i, e))
			}
		}
		for _, what := range lr.Revoke {
			switch what {
			case "token":
			case "session":
				r.RevokeSession = true
			case "subject":
				r.RevokeSubject = true
			default:
				errs = append(errs, fmt.Errorf("logout_routes[%d].revoke: want token, session or subject, got %q", i, what))
			}
		}
		out = append(out, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	routes, err := policy.NewLogoutRoutes(out)
	if err != nil {
		return nil, fmt.Errorf("logout_routes: %w", err)
	}
	return routes, nil
}

// joined lists the errors an errors.Join made, or err alone.
func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// BackchannelConfig is POST /backchannel-logout, on when any issuer lists
// logout_client_ids.
type BackchannelConfig struct {
	// RevokeSubject: a logout token's sub revokes the user from its iat
	// (every session), not only its sid.
	RevokeSubject bool `yaml:"revoke_subject"`
}

type WebhooksConfig struct {
	FusionAuth FusionAuthConfig `yaml:"fusionauth"`
}

// FusionAuthConfig is the FusionAuth webhook receiver; it is on when Issuer
// is set, to the name or the iss of a configured issuer.
type FusionAuthConfig struct {
	Issuer     string           `yaml:"issuer"`
	TenantIDs  []string         `yaml:"tenant_ids"`
	SigningKey SigningKeyConfig `yaml:"signing_key"`
	BasicAuth  struct {
		Username string `yaml:"username"`
		Password string `yaml:"password"`
	} `yaml:"basic_auth"`
	Header struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"header"`
	RevokeSubjectOnRefreshTokenRevoke bool `yaml:"revoke_subject_on_refresh_token_revoke"`
	RevokeOnPasswordChange            bool `yaml:"revoke_on_password_change"`
	// MaxClockSkew: an event's createInstant further ahead of this clock is
	// clamped to now + MaxClockSkew (and warned about), never refused.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
}

type SigningKeyConfig struct {
	HMACSecret        string   `yaml:"hmac_secret"`
	JWKSURI           string   `yaml:"jwks_uri"`
	Algorithms        []string `yaml:"algorithms"`
	AllowInsecureHTTP bool     `yaml:"allow_insecure_http"`
	// KID pins the signing key: signatures by any other key are refused.
	KID string `yaml:"kid"`
}

type StorageConfig struct {
	// Path of the embedded store, used when PostgresURL is empty.
	Path        string `yaml:"path"`
	PostgresURL string `yaml:"postgres_url"`
	// FollowURL, when set, is a hot standby of PostgresURL to read the
	// change feed from, by polling: NOTIFY does not reach a standby.
	// Writes still go to PostgresURL.
	FollowURL   string `yaml:"follow_url"`
	AutoMigrate bool   `yaml:"auto_migrate"`
	// MaxConns bounds the pool, besides the LISTEN connection; 0 derives
	// it from whether this replica writes (see poolSize).
	MaxConns int32 `yaml:"max_conns"`
	// WriteTimeout bounds one write transaction (a batch of the writes
	// that arrived together): past it, its writes are answered 503.
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// The pool sizes storage.max_conns defaults to. A replica that only reads
// needs one connection: its follower reads the feed one batch at a time.
// A writer needs a few: writes serialise on the feed's row lock anyway, so
// more connections only queue there, and every one of them counts against
// the server's max_connections once per replica.
const (
	readerConns = 1
	writerConns = 4
)

// writes reports whether this replica writes revocations: it serves the
// admin API, FusionAuth webhooks, back-channel logout or a logout route.
// A replica that does none of these only reads the store.
func (c Config) writes() bool {
	return c.Admin.Token != "" || c.Webhooks.FusionAuth.Issuer != "" || c.backchannelEnabled() || len(c.LogoutRoutes) > 0
}

// poolSize is storage.max_conns, or when it is 0 the default for what
// this replica does.
func (c Config) poolSize() int32 {
	switch {
	case c.Storage.MaxConns > 0:
		return c.Storage.MaxConns
	case c.writes():
		return writerConns
	}
	return readerConns
}

type RevocationConfig struct {
	MaxStaleness    time.Duration `yaml:"max_staleness"`
	OnStale         string        `yaml:"on_stale"`
	PollInterval    time.Duration `yaml:"poll_interval"`
	SweepInterval   time.Duration `yaml:"sweep_interval"`
	ChangeRetention time.Duration `yaml:"change_retention"`
	SnapshotTimeout time.Duration `yaml:"snapshot_timeout"`
}

type ListenConfig struct {
	GRPC string `yaml:"grpc"`
	HTTP string `yaml:"http"`
	// GRPCTLS and HTTPTLS serve TLS (mutual TLS with a client CA).
	GRPCTLS TLSConfig `yaml:"grpc_tls"`
	HTTPTLS TLSConfig `yaml:"http_tls"`
	// Admin, when set, is a separate listener for the admin API and
	// /metrics (which then answer 404 on HTTP), so that the webhook
	// endpoints can face the IdP while the admin API stays internal.
	Admin    string    `yaml:"admin"`
	AdminTLS TLSConfig `yaml:"admin_tls"`
	// AuthzHTTP, when set, serves the decision over HTTP (authz_http): the
	// protocol of Envoy's HTTP ext_authz, nginx auth_request, Caddy
	// forward_auth and Traefik forwardAuth. Off by default.
	AuthzHTTP    string    `yaml:"authz_http"`
	AuthzHTTPTLS TLSConfig `yaml:"authz_http_tls"`
	// TLSReloadInterval: the certificate files are read again this often,
	// and a changed certificate is served to new connections.
	TLSReloadInterval time.Duration `yaml:"tls_reload_interval"`
}

type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
	// DenialsPerSecond bounds the "denied" log lines (metrics count all).
	DenialsPerSecond float64 `yaml:"denials_per_second"`
}

// CacheConfig bounds the verified-token cache twice: in entries and in
// bytes (as its weigher counts them). Both hold; 0 in either turns it off.
type CacheConfig struct {
	MaxEntries int `yaml:"max_entries"`
	MaxBytes   int `yaml:"max_bytes"`
}

type JWKSConfig struct {
	RefreshInterval    time.Duration `yaml:"refresh_interval"`
	UnknownKIDInterval time.Duration `yaml:"unknown_kid_interval"`
	Timeout            time.Duration `yaml:"timeout"`
}

type TokensConfig struct {
	MaxBytes int `yaml:"max_bytes"`
	// Sources are where the token is looked for, every one of them.
	Sources []TokenSourceConfig `yaml:"sources"`
}

// TokenSourceConfig is one place the token may be: exactly one of a header
// (authorization: "Bearer <token>"; any other: the bare token) or a cookie.
type TokenSourceConfig struct {
	Header string `yaml:"header"`
	Cookie string `yaml:"cookie"`
}

type IssuerConfig struct {
	Name             string        `yaml:"name"`
	Issuer           string        `yaml:"issuer"`
	JWKSURI          string        `yaml:"jwks_uri"`
	Audiences        []string      `yaml:"audiences"`
	Algorithms       []string      `yaml:"algorithms"`
	HMACSecret       string        `yaml:"hmac_secret"`
	Leeway           time.Duration `yaml:"leeway"`
	MaxTokenLifetime time.Duration `yaml:"max_token_lifetime"`
	// SessionLifetime is the longest a session (what sid names: a
	// FusionAuth refresh token, an OIDC session) lives: session
	// revocations are kept that long.
	SessionLifetime   time.Duration `yaml:"session_lifetime"`
	AllowInsecureHTTP bool          `yaml:"allow_insecure_http"`
	// LogoutClientIDs are accepted as the aud of this issuer's back-channel
	// logout tokens; empty: it sends none.
	LogoutClientIDs []string `yaml:"logout_client_ids"`
	// AcceptIDTokens accepts tokens with at_hash or c_hash (ID tokens) as
	// access tokens.
	AcceptIDTokens bool `yaml:"accept_id_tokens"`
	// RequireTyp is the only JWS typ accepted (at+jwt), for IdPs that type
	// their access tokens; empty: JWT, at+jwt or none.
	RequireTyp string `yaml:"require_typ"`
	// Required: readiness waits for this issuer's keys. An issuer that is
	// not required answers UNAVAILABLE for its own tokens until they load.
	Required bool `yaml:"required"`
	// RolesClaim is the dotted path of the token's roles, for the route
	// policy's roles requirement: FusionAuth's roles, Keycloak's
	// realm_access.roles.
	RolesClaim string `yaml:"roles_claim"`
}

type ShutdownConfig struct {
	DrainDelay time.Duration `yaml:"drain_delay"`
	Timeout    time.Duration `yaml:"timeout"`
}

// defaultConfig is the embedded default: loopback listeners, no issuers.
func defaultConfig() Config {
	return Config{
		Listen:      ListenConfig{GRPC: "127.0.0.1:9191", HTTP: "127.0.0.1:8181", TLSReloadInterval: 10 * time.Second},
		Log:         LogConfig{Level: "info", Format: "json", DenialsPerSecond: 100},
		Cache:       CacheConfig{MaxEntries: 100_000, MaxBytes: token.DefaultCacheMaxBytes},
		JWKS:        JWKSConfig{RefreshInterval: 15 * time.Minute, UnknownKIDInterval: 30 * time.Second, Timeout: 10 * time.Second},
		Tokens:      TokensConfig{MaxBytes: 16 << 10, Sources: []TokenSourceConfig{{Header: "authorization"}}},
		Storage:     StorageConfig{Path: "./tokengate-data/tokengate.db", AutoMigrate: true, WriteTimeout: storage.DefaultWriteTimeout},
		Webhooks:    WebhooksConfig{FusionAuth: FusionAuthConfig{RevokeOnPasswordChange: true, MaxClockSkew: intake.DefaultMaxClockSkew}},
		Backchannel: BackchannelConfig{RevokeSubject: true},
		Revocation: RevocationConfig{MaxStaleness: 30 * time.Second, OnStale: "deny", PollInterval: time.Second,
			SweepInterval: time.Minute, ChangeRetention: time.Hour, SnapshotTimeout: 5 * time.Minute},
		Shutdown:  ShutdownConfig{DrainDelay: 5 * time.Second, Timeout: 15 * time.Second},
		Policy:    PolicyConfig{Unmatched: "deny", PollInterval: 10 * time.Second},
		AuthzHTTP: AuthzHTTPConfig{Mode: "envoy"},
	}
}

// setDefaults gives an issuer its defaults before its keys are read, so
// that a key given as zero stays zero.
func (ic *IssuerConfig) setDefaults() {
	ic.Leeway = 30 * time.Second
	ic.MaxTokenLifetime = time.Hour
	ic.SessionLifetime = intake.DefaultSessionLifetime
	ic.Required = true
	ic.RolesClaim = "roles"
}

// defaultIssuer is an issuer with nothing but the defaults.
func defaultIssuer() IssuerConfig {
	var ic IssuerConfig
	ic.setDefaults()
	return ic
}

// settings is a validated configuration with what serve needs built from
// it: built once, by build, and used as built.
type settings struct {
	Config
	headers             *policy.HeaderMap
	logoutRoutes        *policy.LogoutRoutes
	introspectionRoutes *policy.IntrospectionRoutes
	tokenSources        []extauthz.TokenSource
	policy              *policySettings // nil: no route policy
	issuers             []token.Issuer  // for the verifier
	intakeIssuers       []intake.Issuer // for revocation intake
	authzHTTP           extauthz.HTTPOptions
}

// loadConfig reads YAML over the defaults, applies secrets from the
// environment, validates everything, reporting all problems at once, and
// builds the settings. Unknown keys are errors.
func loadConfig(r io.Reader, getenv func(string) string) (settings, error) {
	return loadConfigFrom("", r, getenv)
}

// loadConfigFrom is loadConfig for the file name (""; not a file): a
// relative policy.file is relative to it, and policy problems name it.
func loadConfigFrom(name string, r io.Reader, getenv func(string) string) (settings, error) {
	cfg := defaultConfig()
	data, err := io.ReadAll(r)
	if err != nil {
		return settings{Config: cfg}, err
	}
	src := configSource{name: name, lines: map[string]int{}}
	problems, err := decodeYAML(data, &cfg, src.lines)
	if err != nil {
		return settings{Config: cfg}, err // not YAML at all
	}
	// Keys and values that could not be read are reported together with
	// every validation problem of the rest.
	applyEnv(&cfg, getenv)
	s, err := cfg.buildFrom(src)
	if len(problems) > 0 {
		return s, errors.Join(append(problems, err)...)
	}
	return s, err
}

// envName is the environment variable that holds an issuer's HMAC secret:
// TOKENGATE_ISSUER_<NAME>_HMAC_SECRET, the name upper-cased with '-' as '_'.
func envName(issuerName string) string {
	return "TOKENGATE_ISSUER_" + strings.ToUpper(strings.ReplaceAll(issuerName, "-", "_")) + "_HMAC_SECRET"
}

func applyEnv(cfg *Config, getenv func(string) string) {
	if v := getenv("TOKENGATE_POSTGRES_URL"); v != "" {
		cfg.Storage.PostgresURL = v
	}
	if v := getenv("TOKENGATE_FOLLOW_URL"); v != "" {
		cfg.Storage.FollowURL = v
	}
	if v := getenv("TOKENGATE_ADMIN_TOKEN"); v != "" {
		cfg.Admin.Token = v
	}
	fa := &cfg.Webhooks.FusionAuth
	for env, dst := range map[string]*string{
		"TOKENGATE_FUSIONAUTH_WEBHOOK_HMAC_SECRET":  &fa.SigningKey.HMACSecret,
		"TOKENGATE_FUSIONAUTH_WEBHOOK_PASSWORD":     &fa.BasicAuth.Password,
		"TOKENGATE_FUSIONAUTH_WEBHOOK_HEADER_VALUE": &fa.Header.Value,
	} {
		if v := getenv(env); v != "" {
			*dst = v
		}
	}
	for i := range cfg.Issuers {
		if v := getenv(envName(cfg.Issuers[i].Name)); v != "" {
			cfg.Issuers[i].HMACSecret = v
		}
	}
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// build validates the configuration, every problem at once with its YAML
// path, and builds the settings from it.
func (c Config) build() (settings, error) { return c.buildFrom(configSource{}) }

// buildFrom is build for a configuration read from src.
func (c Config) buildFrom(src configSource) (settings, error) {
	s := settings{Config: c}
	var errs []error
	bad := func(path, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	for path, addr := range map[string]string{"listen.grpc": c.Listen.GRPC, "listen.http": c.Listen.HTTP} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(path, "want host:port, got %q", addr)
		}
	}
	if c.Listen.Admin != "" {
		if _, _, err := net.SplitHostPort(c.Listen.Admin); err != nil {
			bad("listen.admin", "want host:port, got %q", c.Listen.Admin)
		}
	} else if c.Listen.AdminTLS.enabled() {
		bad("listen.admin_tls", "set without listen.admin")
	}
	errs = append(errs, c.Listen.AdminTLS.validate("listen.admin_tls")...)
	if c.Listen.AuthzHTTP != "" {
		if _, _, err := net.SplitHostPort(c.Listen.AuthzHTTP); err != nil {
			bad("listen.authz_http", "want host:port, got %q", c.Listen.AuthzHTTP)
		}
	} else {
		// Settings for an endpoint that is off: a listener forgotten.
		if c.Listen.AuthzHTTPTLS.enabled() {
			bad("listen.authz_http_tls", "set without listen.authz_http")
		}
		if c.AuthzHTTP.Mode != defaultConfig().AuthzHTTP.Mode {
			bad("authz_http.mode", "set without listen.authz_http")
		}
		if c.AuthzHTTP.PathPrefix != "" {
			bad("authz_http.path_prefix", "set without listen.authz_http")
		}
	}
	errs = append(errs, c.Listen.AuthzHTTPTLS.validate("listen.authz_http_tls")...)
	if mode, err := extauthz.ParseHTTPMode(c.AuthzHTTP.Mode); err != nil {
		bad("authz_http.mode", "%v", err)
	} else {
		s.authzHTTP = extauthz.HTTPOptions{Mode: mode, PathPrefix: c.AuthzHTTP.PathPrefix}
		if err := s.authzHTTP.Validate(); err != nil {
			bad("authz_http.path_prefix", "%v", err)
		}
	}
	errs = append(errs, c.Listen.GRPCTLS.validate("listen.grpc_tls")...)
	errs = append(errs, c.Listen.HTTPTLS.validate("listen.http_tls")...)
	if c.Listen.TLSReloadInterval < time.Second {
		bad("listen.tls_reload_interval", "must be at least 1s, got %s", c.Listen.TLSReloadInterval)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	if c.Log.DenialsPerSecond <= 0 {
		bad("log.denials_per_second", "must be positive")
	}
	if !slices.Contains([]string{"json", "text"}, c.Log.Format) {
		bad("log.format", "want json or text, got %q", c.Log.Format)
	}
	if c.Cache.MaxEntries < 0 {
		bad("cache.max_entries", "must be 0 (off) or more")
	}
	if c.Cache.MaxBytes != 0 && c.Cache.MaxBytes < minCacheBytes {
		bad("cache.max_bytes", "must be 0 (off) or at least %d", minCacheBytes)
	}
	if c.JWKS.RefreshInterval < time.Second {
		bad("jwks.refresh_interval", "must be at least 1s")
	}
	if c.JWKS.UnknownKIDInterval < time.Second {
		bad("jwks.unknown_kid_interval", "must be at least 1s")
	}
	if c.JWKS.Timeout <= 0 {
		bad("jwks.timeout", "must be positive")
	}
	if c.Tokens.MaxBytes < 256 || c.Tokens.MaxBytes > 1<<20 {
		bad("tokens.max_bytes", "must be between 256 and 1048576")
	}
	if c.Shutdown.DrainDelay < 0 || c.Shutdown.Timeout <= 0 {
		bad("shutdown", "drain_delay must be 0 or more and timeout positive")
	}
	if len(c.Issuers) == 0 {
		bad("issuers", "at least one issuer is required")
	}
	names, issuers := map[string]bool{}, map[string]bool{}
	for i, ic := range c.Issuers {
		p := fmt.Sprintf("issuers[%d]", i)
		if !nameRE.MatchString(ic.Name) {
			bad(p+".name", "want lower-case letters, digits, '-' or '_', got %q", ic.Name)
		} else if names[ic.Name] {
			bad(p+".name", "%q is used twice", ic.Name)
		}
		names[ic.Name] = true
		if ic.Issuer == "" {
			bad(p+".issuer", "required")
		} else if issuers[ic.Issuer] {
			bad(p+".issuer", "%q is configured twice", ic.Issuer)
		}
		issuers[ic.Issuer] = true
		if len(ic.Audiences) == 0 {
			bad(p+".audiences", "at least one audience is required")
		}
		for j, a := range ic.Audiences {
			if a == "" {
				bad(fmt.Sprintf("%s.audiences[%d]", p, j), "empty")
			}
		}
		for j, a := range ic.Algorithms {
			if err := token.CheckAlgorithm(a, ic.HMACSecret != ""); err != nil {
				hint := ""
				if strings.HasPrefix(a, "HS") {
					hint = fmt.Sprintf(" (set hmac_secret or %s)", envName(ic.Name))
				}
				bad(fmt.Sprintf("%s.algorithms[%d]", p, j), "%v%s", err, hint)
			}
		}
		if ic.HMACSecret != "" && len(ic.HMACSecret) < 32 {
			bad(p+".hmac_secret", "must be at least 32 bytes")
		}
		switch {
		case ic.JWKSURI != "":
			if err := token.CheckURL(ic.JWKSURI, ic.AllowInsecureHTTP); err != nil {
				bad(p+".jwks_uri", "%v", err)
			}
		case ic.HMACSecret != "":
			// HMAC only: no keys to fetch.
		default:
			if err := token.CheckURL(ic.Issuer, ic.AllowInsecureHTTP); err != nil {
				bad(p+".jwks_uri", "empty, and the issuer is not a URL for OIDC discovery: %v", err)
			}
		}
		if ic.Leeway < 0 || ic.Leeway > 5*time.Minute {
			bad(p+".leeway", "must be between 0 and 5m")
		}
		if ic.MaxTokenLifetime <= 0 || ic.MaxTokenLifetime > 7*24*time.Hour {
			bad(p+".max_token_lifetime", "must be between 1s and 168h")
		}
		if ic.SessionLifetime < time.Minute || ic.SessionLifetime > 8760*time.Hour {
			bad(p+".session_lifetime", "must be between 1m and 8760h")
		}
		if err := token.CheckRequireTyp(ic.RequireTyp); err != nil {
			bad(p+".require_typ", "%v", err)
		}
	}
	for i, ic := range c.Issuers {
		for j, other := range c.Issuers {
			if i != j && ic.Name != "" && ic.Name == other.Issuer {
				bad(fmt.Sprintf("issuers[%d].name", i), "%q is the iss of issuers[%d]: a reference to it could mean either issuer", ic.Name, j)
			}
		}
	}
	if c.Admin.Token != "" && len(c.Admin.Token) < 32 {
		bad("admin.token", "must be at least 32 characters (or empty to turn the admin API off)")
	}
	if fa := c.Webhooks.FusionAuth; fa.Issuer != "" {
		const p = "webhooks.fusionauth"
		if _, ok := c.issuerRef(fa.Issuer); !ok {
			bad(p+".issuer", "%q is neither the name nor the iss of a configured issuer (issuers[].name or issuers[].issuer)", fa.Issuer)
		}
		sk := fa.SigningKey
		if sk.HMACSecret == "" && sk.JWKSURI == "" && fa.BasicAuth.Password == "" && fa.Header.Value == "" {
			bad(p, "configure at least one of signing_key, basic_auth or header: webhooks must be authenticated")
		}
		if sk.HMACSecret != "" && len(sk.HMACSecret) < 32 {
			bad(p+".signing_key.hmac_secret", "must be at least 32 bytes")
		}
		if sk.JWKSURI != "" {
			if err := token.CheckURL(sk.JWKSURI, sk.AllowInsecureHTTP); err != nil {
				bad(p+".signing_key.jwks_uri", "%v", err)
			}
		}
		for j, a := range sk.Algorithms {
			if err := token.CheckAlgorithm(a, false); err != nil {
				bad(fmt.Sprintf("%s.signing_key.algorithms[%d]", p, j), "%v (want an asymmetric algorithm: the keys come from jwks_uri)", err)
			}
		}
		if (fa.BasicAuth.Password == "") != (fa.BasicAuth.Username == "") {
			bad(p+".basic_auth", "set both username and password")
		}
		if fa.BasicAuth.Password != "" && len(fa.BasicAuth.Password) < 16 {
			bad(p+".basic_auth.password", "must be at least 16 characters")
		}
		if (fa.Header.Name == "") != (fa.Header.Value == "") {
			bad(p+".header", "set both name and value")
		}
		if fa.Header.Value != "" && len(fa.Header.Value) < 16 {
			bad(p+".header.value", "must be at least 16 characters")
		}
		if fa.MaxClockSkew < time.Second || fa.MaxClockSkew > time.Hour {
			bad(p+".max_clock_skew", "must be between 1s and 1h")
		}
	}
	if c.Storage.PostgresURL == "" && c.Storage.Path == "" {
		bad("storage.path", "required when storage.postgres_url is empty")
	}
	if c.Storage.WriteTimeout < 100*time.Millisecond {
		bad("storage.write_timeout", "must be at least 100ms")
	}
	if c.Storage.MaxConns < 0 {
		bad("storage.max_conns", "must be 0 (derived from whether this replica writes) or more")
	}
	if c.Storage.FollowURL != "" && c.Storage.PostgresURL == "" {
		bad("storage.follow_url", "set without storage.postgres_url, the primary that takes the writes")
	}
	rc := c.Revocation
	if rc.MaxStaleness < time.Second {
		bad("revocation.max_staleness", "must be at least 1s")
	}
	if rc.OnStale != "deny" && rc.OnStale != "allow" {
		bad("revocation.on_stale", "want deny or allow, got %q", rc.OnStale)
	}
	if rc.PollInterval < 10*time.Millisecond || rc.PollInterval > rc.MaxStaleness {
		bad("revocation.poll_interval", "must be between 10ms and max_staleness")
	}
	if rc.SweepInterval < time.Second {
		bad("revocation.sweep_interval", "must be at least 1s")
	}
	if rc.ChangeRetention < time.Minute {
		bad("revocation.change_retention", "must be at least 1m")
	}
	if rc.SnapshotTimeout < 10*time.Second {
		bad("revocation.snapshot_timeout", "must be at least 10s")
	}
	var err error
	if s.logoutRoutes, err = c.logoutRoutes(); err != nil {
		errs = append(errs, err)
	}
	if s.introspectionRoutes, err = c.introspectionRoutes(); err != nil {
		errs = append(errs, err)
	}
	if s.headers, err = policy.NewHeaderMap(c.ClaimHeaders); err != nil {
		bad("claim_headers", "%v", err)
	}
	s.tokenSources = c.tokenSources()
	managed := []string{policy.HeaderIssuer, policy.HeaderSubject, policy.HeaderTokenID}
	if s.headers != nil {
		managed = s.headers.Names()
	}
	// checkSources validates the token sources against the identity
	// headers and a policy's rule headers, which tokengate manages too.
	sources := s.tokenSources
	checkSources := func(set *policy.Set) []error {
		all := managed
		if set != nil {
			all = slices.Concat(managed, set.HeaderNames())
		}
		var out []error
		if err := extauthz.ValidateTokenSources(sources, all); err != nil {
			for _, e := range joined(err) {
				out = append(out, fmt.Errorf("tokens.%w", e))
			}
		}
		return out
	}
	var perrs []error
	s.policy, perrs = c.buildPolicy(src)
	errs = append(errs, perrs...)
	if s.policy != nil {
		s.policy.check = checkSources
		errs = append(errs, checkSources(s.policy.set)...)
	} else {
		errs = append(errs, checkSources(nil)...)
	}
	if err := errors.Join(errs...); err != nil {
		return settings{Config: c}, err
	}
	s.issuers, s.intakeIssuers = c.verifierIssuers(), c.intakeIssuersOf()
	return s, nil
}

// backchannelEnabled: some issuer sends back-channel logout tokens.
func (c Config) backchannelEnabled() bool {
	for _, ic := range c.Issuers {
		if len(ic.LogoutClientIDs) > 0 {
			return true
		}
	}
	return false
}

// intakeIssuersOf is what revocation intake needs of each issuer.
func (c Config) intakeIssuersOf() []intake.Issuer {
	out := make([]intake.Issuer, 0, len(c.Issuers))
	for _, ic := range c.Issuers {
		out = append(out, intake.Issuer{Name: ic.Name, Issuer: ic.Issuer, MaxTokenLifetime: ic.MaxTokenLifetime, Leeway: ic.Leeway,
			SessionLifetime: ic.SessionLifetime})
	}
	return out
}

// verifierIssuers converts the validated issuer configuration.
func (c Config) verifierIssuers() []token.Issuer {
	out := make([]token.Issuer, 0, len(c.Issuers))
	for _, ic := range c.Issuers {
		ti := token.Issuer{
			Name:              ic.Name,
			Issuer:            ic.Issuer,
			JWKSURI:           ic.JWKSURI,
			Audiences:         ic.Audiences,
			Algorithms:        ic.Algorithms,
			Leeway:            ic.Leeway,
			MaxTokenLifetime:  ic.MaxTokenLifetime,
			LogoutAudiences:   ic.LogoutClientIDs,
			AllowInsecureHTTP: ic.AllowInsecureHTTP,
			AcceptIDTokens:    ic.AcceptIDTokens,
			RequireTyp:        ic.RequireTyp,
		}
		if ic.HMACSecret != "" {
			ti.HMACSecret = []byte(ic.HMACSecret)
		}
		out = append(out, ti)
	}
	return out
}

// issuerRef finds a configured issuer by its iss or, failing that, its
// name, as intake.Revoker.Lookup does: build refuses a name that is another
// issuer's iss, so a reference means one issuer.
func (c Config) issuerRef(ref string) (IssuerConfig, bool) {
	for _, ic := range c.Issuers {
		if ic.Issuer == ref {
			return ic, true
		}
	}
	for _, ic := range c.Issuers {
		if ic.Name == ref {
			return ic, true
		}
	}
	return IssuerConfig{}, false
}

// minCacheBytes is the smallest byte bound for the verified-token cache: a
// few hundred tokens.
const minCacheBytes = 1 << 20

// cacheEntries is the verifier's entry bound: 0 (no cache) when either
// bound is 0.
func (c CacheConfig) cacheEntries() int {
	if c.MaxBytes == 0 {
		return 0
	}
	return c.MaxEntries
}
