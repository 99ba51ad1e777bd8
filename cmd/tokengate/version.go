package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and commit are stamped at build time by .ci/build-tokengate (the
// Dockerfile and make release call it) with
// -ldflags "-X main.version=… -X main.commit=…". A container build sees no
// .git, so the commit cannot come from the VCS stamp there; a plain go build
// in a clone gets it from the build info instead.
var (
	version = "dev"
	commit  = ""
)

// buildCommit is the commit the binary was built from: the stamped one, else
// the VCS revision of the build info ("-dirty" when the tree had changes),
// else "unknown".
func buildCommit() string {
	if commit != "" {
		return commit
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	switch {
	case rev == "":
		return "unknown"
	case dirty:
		return rev + "-dirty"
	}
	return rev
}

// goVersion is the Go release the binary was built with, from the build info.
func goVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok && info.GoVersion != "" {
		return info.GoVersion
	}
	return runtime.Version()
}

// versionString is what tokengate version prints: the version, the commit,
// the Go release and the platform, on one line.
func versionString() string {
	return fmt.Sprintf("%s (commit %s, %s %s/%s)", version, buildCommit(), goVersion(), runtime.GOOS, runtime.GOARCH)
}
