package main

import (
	"os"
	"testing"

	"github.com/tokengate/tokengate/storage/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
