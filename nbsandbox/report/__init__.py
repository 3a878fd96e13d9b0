"""The access report: which host paths a sandboxed run used (docs/access.md).

The native recorders write raw records (:mod:`.records`); they are folded into
accesses (:mod:`.aggregate`), grouped for a person (:mod:`.groups`), written as
a versioned JSON document (:mod:`.document`), shown (:mod:`.render`) and turned
into Landlock settings (:mod:`.as_policy`).  :mod:`.recording` is the launch
core's side: it sets a launch up to record and finishes the report.
"""
