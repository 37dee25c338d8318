// Package testenv decides whether a test that needs privileges or external programs can run. Outside
// CI a missing prerequisite skips the test with the reason; under CI (CI=true) it fails it, because
// CI runs as root with every prerequisite installed and nothing there may skip.
package testenv
