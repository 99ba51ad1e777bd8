//go:build !unix

package pgcluster

import (
	"fmt"
	"os/exec"
	"runtime"
)

// procAttr is empty where local clusters are not supported.
type procAttr struct{}

func serverUser() (procAttr, error) {
	return procAttr{}, fmt.Errorf("%w: local clusters are not supported on %s", ErrUnavailable, runtime.GOOS)
}

func (procAttr) chown(string) error       { return nil }
func (procAttr) setGroup(*exec.Cmd)       {}
func (procAttr) setSession(cmd *exec.Cmd) {}
