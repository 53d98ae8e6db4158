// Command compose-check loads a Compose file the way `docker compose` does, without Docker:
// compose-go's loader parses it, interpolates variables (from an empty environment, so only
// `${VAR:-default}` forms give values), validates it against the Compose specification's JSON
// schema, normalizes it and checks its consistency (depends_on, networks, volumes, secrets and
// configs that services name must be declared). It is how the suite validates the top-level
// docker-compose.yml in CI, where no Docker engine runs.
//
// Usage: compose-check FILE
//
// On success it prints the loaded project as JSON on stdout (relative bind-mount sources
// resolved against the file's folder) and exits 0; on any error it prints the loader's message
// on stderr and exits 1. Usage errors exit 2.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE")
		os.Exit(2)
	}
	file, err := filepath.Abs(os.Args[1])
	if err != nil {
		fail(err)
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(file),
		ConfigFiles: []types.ConfigFile{{Filename: file}},
		Environment: types.Mapping{},
	}
	project, err := loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName("vwproxy", true)
		// env_file entries would be read from the machine running the check; the file
		// under test has none, and the check must not depend on the caller's files.
		o.SkipResolveEnvironment = true
	})
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(append(out, '\n'))
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "compose-check: %s: %v\n", os.Args[1], err)
	os.Exit(1)
}
