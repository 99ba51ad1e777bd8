package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitPercent of the container's memory limit becomes the Go
// runtime's soft memory limit when GOMEMLIMIT is not set: the collector then
// works harder as the heap nears the limit instead of letting GOGC=200 grow
// it past, and the rest is headroom for memory the runtime does not count.
const memoryLimitPercent = 90

// envMemoryLimit names the variable that carries the container's memory
// limit in bytes, as Kubernetes' downward API gives it
// (resourceFieldRef: limits.memory). Unlike GOMEMLIMIT, which the runtime
// takes as the soft limit itself, it is the hard limit tokengate takes
// memoryLimitPercent of.
const envMemoryLimit = "TOKENGATE_MEMORY_LIMIT"

// tuneMemory sets the soft memory limit to memoryLimitPercent of the
// container's memory limit: TOKENGATE_MEMORY_LIMIT when set, else the
// cgroup's, read under root ("/" outside tests). GOMEMLIMIT wins over both:
// the runtime has applied it already. It logs what it chose.
func tuneMemory(getenv func(string) string, root string, log *slog.Logger) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		log.Info("memory limit from GOMEMLIMIT", "gomemlimit", v)
		return
	}
	if v := getenv(envMemoryLimit); v != "" {
		limit, err := strconv.ParseInt(v, 10, 64)
		if err == nil && limit > 0 {
			soft := limit / 100 * memoryLimitPercent
			debug.SetMemoryLimit(soft)
			log.Info("soft memory limit set from "+envMemoryLimit, "limit_bytes", limit, "gomemlimit_bytes", soft)
			return
		}
		log.Warn(envMemoryLimit+" is not a number of bytes; reading the cgroup's limit instead", "value", v)
	}
	limit, file, err := cgroupMemoryLimit(os.DirFS(root))
	switch {
	case err != nil:
		log.Warn("no soft memory limit: cannot read the cgroup's memory limit", "err", err)
	case limit == 0:
		log.Info("no soft memory limit: the cgroup sets no memory limit", "file", file)
	default:
		soft := limit / 100 * memoryLimitPercent
		debug.SetMemoryLimit(soft)
		log.Info("soft memory limit set from the cgroup's", "file", file, "cgroup_limit_bytes", limit,
			"gomemlimit_bytes", soft)
	}
}

// unlimited is where cgroup v1 reports "no limit" (a page-rounded
// MaxInt64); no real limit comes near it.
const unlimited = 1 << 62

// cgroupMemoryLimit returns this process's cgroup memory limit in bytes (0
// for none) and the file it read, from a file system rooted at the host's
// "/". cgroup v2 first (memory.max; "max" is none), then v1
// (memory/memory.limit_in_bytes). The process's own cgroup, from
// /proc/self/cgroup, is tried before the mount's root, which is what a
// container sees of its own cgroup. No cgroup file at all is no limit, not
// an error: tokengate may run where there are no cgroups.
func cgroupMemoryLimit(fsys fs.FS) (int64, string, error) {
	v2, v1 := ownCgroups(fsys)
	var candidates []string
	if v2 != "" {
		candidates = append(candidates, path.Join("sys/fs/cgroup", v2, "memory.max"))
	}
	candidates = append(candidates, "sys/fs/cgroup/memory.max")
	if v1 != "" {
		candidates = append(candidates, path.Join("sys/fs/cgroup/memory", v1, "memory.limit_in_bytes"))
	}
	candidates = append(candidates, "sys/fs/cgroup/memory/memory.limit_in_bytes")
	for _, name := range candidates {
		b, err := fs.ReadFile(fsys, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, name, fmt.Errorf("read %s: %w", name, err)
		}
		s := string(bytes.TrimSpace(b))
		if s == "max" {
			return 0, name, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return 0, name, fmt.Errorf("read %s: not a memory limit: %q", name, s)
		}
		if n >= unlimited {
			return 0, name, nil
		}
		return n, name, nil
	}
	return 0, "", nil
}

// ownCgroups reads /proc/self/cgroup: the cgroup v2 path ("0::/path") and
// the v1 memory controller's ("N:…memory…:/path"), relative, "" if absent.
func ownCgroups(fsys fs.FS) (v2, v1 string) {
	f, err := fsys.Open("proc/self/cgroup")
	if err != nil {
		return "", ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		id, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		controllers, p, ok := strings.Cut(rest, ":")
		if !ok {
			continue
		}
		p = strings.TrimPrefix(path.Clean("/"+p), "/")
		if p == "" {
			continue
		}
		switch {
		case id == "0" && controllers == "":
			v2 = p
		case containsWord(controllers, "memory"):
			v1 = p
		}
	}
	return v2, v1
}

func containsWord(list, word string) bool {
	for w := range strings.SplitSeq(list, ",") {
		if w == word {
			return true
		}
	}
	return false
}
