//go:build unix

package pgcluster

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
)

// procAttr says how to run the server's programs: as the postgres system
// user when this process is root, since initdb refuses to run as root;
// otherwise as this process's user.
type procAttr struct {
	cred *syscall.Credential
}

func serverUser() (procAttr, error) {
	if os.Geteuid() != 0 {
		return procAttr{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return procAttr{}, fmt.Errorf("%w: running as root, which initdb refuses, and no postgres system user to run it as: %w", ErrUnavailable, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return procAttr{}, fmt.Errorf("postgres user id %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return procAttr{}, fmt.Errorf("postgres group id %q: %w", u.Gid, err)
	}
	return procAttr{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}, nil
}

// chown gives path to the server's user.
func (p procAttr) chown(path string) error {
	if p.cred == nil {
		return nil
	}
	return os.Chown(path, int(p.cred.Uid), int(p.cred.Gid))
}

// setGroup makes cmd run as the server's user in a process group of its
// own, all of which is killed when cmd's context ends. (pg_ctl start puts
// the server in a session of its own, so that does not kill the server.)
func (p procAttr) setGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}

// setSession makes cmd run as the server's user in a session of its own,
// out of reach of the terminal's signals, so that it outlives this process.
func (p procAttr) setSession(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setsid: true}
}
