// Package monitor defines the flow and verdict events Palisade reports (datapath drops and policy
// verdicts, L7 access-log entries, agent notices), their text and JSON forms, and a hub that fans
// them out to subscribers such as `palisade monitor` without letting a slow reader stall the
// datapath reader: a subscriber that falls behind loses events and is told how many.
package monitor
