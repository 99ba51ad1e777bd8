// Command tokengate is an Envoy ext_authz server that makes logout real for
// APIs: it verifies bearer JWTs against their issuer's keys and answers
// Envoy's Check calls. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		code := 1
		var ec *exitCode
		if errors.As(err, &ec) {
			code = ec.code
		}
		if ec == nil || ec.err != nil {
			fmt.Fprintln(os.Stderr, "tokengate:", err)
		}
		stop()
		os.Exit(code)
	}
}
