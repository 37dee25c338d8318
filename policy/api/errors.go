package api

import (
	"fmt"
	"strings"
)

// FieldError is one reason a document was rejected: which document, where in it, and why.
type FieldError struct {
	// Document names the object: "namespace/name", "name", or "document N" when it has no name.
	Document string
	// Path is the field path inside the document, e.g. "spec.egress[0].toPorts[0].ports[0].port".
	Path   string
	Reason string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Document != "" {
		b.WriteString(e.Document)
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// ErrorList is every problem found in an input, one per line.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Warning is suspicious but legal input: the policy is accepted as written.
type Warning struct {
	Document string
	Path     string
	Message  string
}

func (w Warning) String() string {
	return (&FieldError{Document: w.Document, Path: w.Path, Reason: w.Message}).Error()
}

// report collects the errors and warnings of one document.
type report struct {
	doc      string
	errs     ErrorList
	warnings []Warning
}

func (r *report) errorf(path, format string, args ...any) {
	r.errs = append(r.errs, &FieldError{Document: r.doc, Path: path, Reason: fmt.Sprintf(format, args...)})
}

func (r *report) warnf(path, format string, args ...any) {
	r.warnings = append(r.warnings, Warning{Document: r.doc, Path: path, Message: fmt.Sprintf(format, args...)})
}

// field and index build field paths the way users read them in YAML.
func field(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func index(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}

func mapKey(path, key string) string {
	return fmt.Sprintf("%s[%q]", path, key)
}
