package main

import (
	"bufio"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	goversion "go/version"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// No container engine runs where these tests run, so they check the
// Dockerfile, .dockerignore and `make release` by reading them, and run the
// build script that both use.

// dockerStage is one stage of a Dockerfile: its base image, its name and its
// instructions, continuation lines joined and comments dropped.
type dockerStage struct {
	from, name string
	instr      []dockerInstr
}

type dockerInstr struct{ cmd, args string }

// find returns the arguments of every instruction cmd of the stage.
func (s dockerStage) find(cmd string) []string {
	var args []string
	for _, in := range s.instr {
		if in.cmd == cmd {
			args = append(args, in.args)
		}
	}
	return args
}

func parseDockerfile(t *testing.T) []dockerStage {
	t.Helper()
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []dockerStage
	var line string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") || (text == "" && line == "") {
			continue
		}
		if rest, ok := strings.CutSuffix(text, `\`); ok {
			line += rest + " "
			continue
		}
		line += text
		cmd, args, _ := strings.Cut(line, " ")
		cmd, args, line = strings.ToUpper(cmd), strings.TrimSpace(args), ""
		if cmd == "FROM" {
			var st dockerStage
			fields := slices.DeleteFunc(strings.Fields(args), func(f string) bool { return strings.HasPrefix(f, "--") })
			st.from = fields[0]
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if cmd != "ARG" {
				t.Fatalf("Dockerfile: %s before the first FROM", cmd)
			}
			continue
		}
		stages[len(stages)-1].instr = append(stages[len(stages)-1].instr, dockerInstr{cmd, args})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// TestDockerfile: a build stage on a pinned Go at least go.mod's, building
// with .ci/build-tokengate; a distroless static non-root runtime stage
// holding only the binary, exposing the default ports, running serve.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t)
	if len(stages) != 2 {
		t.Fatalf("Dockerfile: %d stages, want 2 (build, runtime)", len(stages))
	}
	build, rt := stages[0], stages[1]

	m := regexp.MustCompile(`^golang:(\d+\.\d+\.\d+)-[a-z]+$`).FindStringSubmatch(build.from)
	if m == nil {
		t.Errorf("build stage FROM %s: want golang:X.Y.Z-<debian release>, a pinned Go", build.from)
	} else if want := goModVersion(t); goversion.Compare("go"+m[1], "go"+want) < 0 {
		t.Errorf("build stage: Go %s, older than go.mod's go %s", m[1], want)
	}
	if build.name != "build" {
		t.Errorf("build stage named %q, want build", build.name)
	}
	var script []string
	for _, run := range build.find("RUN") {
		if strings.Contains(run, "go build") {
			t.Errorf("build stage RUN %q: build with .ci/build-tokengate, as make release does", run)
		}
		if strings.Contains(run, ".ci/build-tokengate") {
			script = append(script, run)
		}
	}
	if len(script) != 1 || !strings.HasSuffix(script[0], ".ci/build-tokengate /out/tokengate") {
		t.Errorf("build stage: RUNs of .ci/build-tokengate %q, want one, building /out/tokengate", script)
	}
	for _, arg := range []string{"VERSION", "COMMIT"} {
		if !slices.ContainsFunc(build.find("ARG"), func(a string) bool { return a == arg || strings.HasPrefix(a, arg+"=") }) {
			t.Errorf("build stage: no ARG %s", arg)
		}
	}

	if rt.from != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("runtime stage FROM %s, want gcr.io/distroless/static-debian12:nonroot", rt.from)
	}
	if got := rt.find("COPY"); !slices.Equal(got, []string{"--from=build /out/tokengate /tokengate"}) {
		t.Errorf("runtime stage COPY %q, want only the binary: --from=build /out/tokengate /tokengate", got)
	}
	if got := rt.find("ADD"); len(got) > 0 {
		t.Errorf("runtime stage ADD %q: want nothing but the binary", got)
	}
	// Numeric: Kubernetes' runAsNonRoot refuses to start a container whose
	// image names its user, since it cannot tell that name is not root.
	if got := rt.find("USER"); len(got) != 1 || !regexp.MustCompile(`^[1-9][0-9]*(:[1-9][0-9]*)?$`).MatchString(got[0]) {
		t.Errorf("runtime stage USER %q, want one non-root user by number (uid:gid, not 0), as runAsNonRoot needs", got)
	}
	def := defaultConfig()
	var ports []string
	for _, addr := range []string{def.Listen.GRPC, def.Listen.HTTP} {
		_, port, _ := net.SplitHostPort(addr)
		ports = append(ports, port)
	}
	if got, want := rt.find("EXPOSE"), strings.Join(ports, " "); !slices.Equal(got, []string{want}) {
		t.Errorf("runtime stage EXPOSE %q, want %q (listen.grpc, listen.http)", got, want)
	}
	jsonArgs := func(cmd string) []string {
		got := rt.find(cmd)
		if len(got) != 1 {
			t.Errorf("runtime stage: %d %s, want 1", len(got), cmd)
			return nil
		}
		var v []string
		if err := json.Unmarshal([]byte(got[0]), &v); err != nil {
			t.Errorf("runtime stage %s %s: want the exec (JSON) form: %v", cmd, got[0], err)
		}
		return v
	}
	if got := jsonArgs("ENTRYPOINT"); !slices.Equal(got, []string{"/tokengate"}) {
		t.Errorf("ENTRYPOINT %q, want [/tokengate]", got)
	}
	if got := jsonArgs("CMD"); !slices.Equal(got, []string{"serve"}) {
		t.Errorf("CMD %q, want [serve]", got)
	}
	if got := rt.find("HEALTHCHECK"); len(got) != 1 || !strings.HasSuffix(got[0], `CMD ["/tokengate", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q, want the binary's own: CMD [\"/tokengate\", \"healthcheck\"]", got)
	}
	if got := rt.find("ENV"); !slices.Contains(got, "TOKENGATE_CONFIG=/etc/tokengate/tokengate.yaml") {
		t.Errorf("runtime stage ENV %q, want TOKENGATE_CONFIG=/etc/tokengate/tokengate.yaml, where the README says to mount it", got)
	}
}

func goModVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	return string(m[1])
}

// goRecorder writes a stand-in go command that records each call, the
// target and CGO_ENABLED to a log, and returns the command and the log.
func goRecorder(t *testing.T) (goCmd, log string) {
	t.Helper()
	dir := t.TempDir()
	goCmd, log = filepath.Join(dir, "go"), filepath.Join(dir, "calls")
	script := "#!/bin/sh\n{ printf 'CGO_ENABLED=%s GOOS=%s GOARCH=%s' \"$CGO_ENABLED\" \"$GOOS\" \"$GOARCH\"; for a in \"$@\"; do printf ' [%s]' \"$a\"; done; echo; } >>" + log + "\n"
	if err := os.WriteFile(goCmd, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return goCmd, log
}

func recordedCalls(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestReleaseBuildsAsDockerfile: `make release` and the Dockerfile's build
// stage call go with the same package and flags (CGO_ENABLED=0, -trimpath,
// the version and commit stamped), the output aside. Both are run, with a
// go that records its calls instead of compiling.
func TestReleaseBuildsAsDockerfile(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("make is not installed, and CI never skips")
		}
		t.Skip("make is not installed")
	}
	const ver, commit = "v1.2.3", "0123456789abcdef0123456789abcdef01234567"

	goCmd, log := goRecorder(t)
	mk := exec.Command("make", "-C", "../..", "release", "GO="+goCmd, "VERSION="+ver, "COMMIT="+commit)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	release := recordedCalls(t, log)

	// The Dockerfile's RUN, as the build stage runs it: its ARGs in the
	// environment, from the root of the build context.
	var run string
	for _, r := range parseDockerfile(t)[0].find("RUN") {
		if strings.Contains(r, ".ci/build-tokengate") {
			run = r
		}
	}
	if run == "" {
		t.Fatal("Dockerfile: no RUN of .ci/build-tokengate")
	}
	var docker []string
	for _, arch := range []string{"amd64", "arm64"} {
		goCmd, log := goRecorder(t)
		sh := exec.Command("sh", "-c", run)
		sh.Dir = "../.."
		sh.Env = append(os.Environ(), "GO="+goCmd, "TARGETOS=linux", "TARGETARCH="+arch, "VERSION="+ver, "COMMIT="+commit)
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("Dockerfile RUN %s: %v\n%s", run, err, out)
		}
		docker = append(docker, recordedCalls(t, log)...)
	}

	// The same calls, but for -o.
	output := regexp.MustCompile(` \[-o\] \[[^]]*\]`)
	for i := range release {
		release[i] = output.ReplaceAllString(release[i], " [-o] [OUT]")
	}
	for i := range docker {
		docker[i] = output.ReplaceAllString(docker[i], " [-o] [OUT]")
	}
	if !slices.Equal(release, docker) {
		t.Errorf("make release calls\n  %s\nthe Dockerfile calls\n  %s", strings.Join(release, "\n  "), strings.Join(docker, "\n  "))
	}
	for i, arch := range []string{"amd64", "arm64"} {
		if i >= len(release) {
			t.Errorf("make release: no build for linux/%s", arch)
			continue
		}
		want := "CGO_ENABLED=0 GOOS=linux GOARCH=" + arch + " [build] [-trimpath] [-buildvcs=false] [-ldflags] [-s -w -X main.version=" + ver + " -X main.commit=" + commit + "] [-o] [OUT] [./cmd/tokengate]"
		if release[i] != want {
			t.Errorf("make release, linux/%s:\n got %s\nwant %s", arch, release[i], want)
		}
	}
}

// TestReleaseBinary builds with .ci/build-tokengate, as the image and make
// release do, and reads the binary: static, stamped, built with
// CGO_ENABLED=0 and -trimpath; on Linux it runs it.
func TestReleaseBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tokengate (-short)")
	}
	const ver, commit = "v0.0.0-test", "0123456789abcdef0123456789abcdef01234567"
	bin := filepath.Join(t.TempDir(), "tokengate")
	cmd := exec.Command("sh", "../../.ci/build-tokengate", bin)
	// This machine's architecture: the build cache is shared with CI's
	// release build.
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+runtime.GOARCH, "VERSION="+ver, "COMMIT="+commit)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf(".ci/build-tokengate: %v\n%s", err, out)
	}
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if info.Path != "github.com/tokengate/tokengate/cmd/tokengate" {
		t.Errorf("package %s, want github.com/tokengate/tokengate/cmd/tokengate", info.Path)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	for k, want := range map[string]string{"CGO_ENABLED": "0", "-trimpath": "true", "GOOS": "linux", "GOARCH": runtime.GOARCH} {
		if settings[k] != want {
			t.Errorf("build setting %s = %q, want %q", k, settings[k], want)
		}
	}
	// -trimpath leaves -ldflags out of the build info: the stamp shows in
	// the binary's strings, and in what version prints.
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{ver, commit} {
		if !strings.Contains(string(b), x) {
			t.Errorf("the binary does not hold %s: not stamped", x)
		}
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%s): distroless static has no libc", p.Type)
		}
	}
	if runtime.GOOS != "linux" {
		return
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	want := fmt.Sprintf("tokengate %s (commit %s, %s linux/%s)\n", ver, commit, info.GoVersion, runtime.GOARCH)
	if string(out) != want {
		t.Errorf("version: got %q, want %q", out, want)
	}
}

// dockerignore is .dockerignore's rules, in order; the last rule that
// matches a path, or one of its parent directories, decides (as Docker's
// patternmatcher does): a path is left out of the build context when that
// rule is not a "!" exception.
type dockerignore []struct {
	re        *regexp.Regexp
	exception bool
}

func readDockerignore(t *testing.T) dockerignore {
	t.Helper()
	b, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var d dockerignore
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		exception := strings.HasPrefix(line, "!")
		pattern := strings.TrimPrefix(filepath.ToSlash(filepath.Clean(strings.TrimPrefix(line, "!"))), "/")
		var re strings.Builder
		for i := 0; i < len(pattern); i++ {
			switch c := pattern[i]; {
			case strings.HasPrefix(pattern[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(pattern[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		d = append(d, struct {
			re        *regexp.Regexp
			exception bool
		}{regexp.MustCompile("^" + re.String() + "$"), exception})
	}
	return d
}

// excludes says whether the build context leaves path out.
func (d dockerignore) excludes(path string) bool {
	excluded := false
	for _, rule := range d {
		for p := path; p != "."; p = filepath.ToSlash(filepath.Dir(p)) {
			if rule.re.MatchString(p) {
				excluded = !rule.exception
				break
			}
		}
	}
	return excluded
}

// TestDockerContext: the build context holds every file the image's build
// reads (go.mod, go.sum, the build script, the Go and embedded files of
// every package of tokengate's that cmd/tokengate imports, for both release
// platforms), and leaves out .git, build outputs, local data and tests.
func TestDockerContext(t *testing.T) {
	d := readDockerignore(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	needed := map[string]bool{"go.mod": true, "go.sum": true, ".ci/build-tokengate": true}
	for _, arch := range []string{"amd64", "arm64"} {
		cmd := exec.Command("go", "list", "-deps", "-json", "./cmd/tokengate")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list: %v", err)
		}
		dec := json.NewDecoder(strings.NewReader(string(out)))
		for dec.More() {
			var p struct {
				Dir                         string
				Module                      *struct{ Main bool }
				GoFiles, EmbedFiles, SFiles []string
			}
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			if p.Module == nil || !p.Module.Main {
				continue
			}
			rel, err := filepath.Rel(root, p.Dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range slices.Concat(p.GoFiles, p.EmbedFiles, p.SFiles) {
				needed[filepath.ToSlash(filepath.Join(rel, f))] = true
			}
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found %d files; want the module's packages", len(needed))
	}
	for f := range needed {
		if d.excludes(f) {
			t.Errorf(".dockerignore leaves out %s, which the image's build needs", f)
		}
	}
	for _, f := range []string{".git", ".git/HEAD", "bin/tokengate-linux-amd64", "dist/x", "tokengate", "tokengate-data/tokengate.db",
		"revocations.db", "storage/bolt/x.db", "cmd/tokengate/run_test.go", "cmd/tokengate/testdata/x.yaml", ".ci/run", "README.md",
		".env", "secrets/db-password", "tokengate.yaml", "tls.key", "cmd/tokengate/dev.pem", "extauthz/.env", "envoy/envoy.yaml", "Makefile"} {
		if !d.excludes(f) {
			t.Errorf(".dockerignore lets %s into the build context", f)
		}
	}
}
