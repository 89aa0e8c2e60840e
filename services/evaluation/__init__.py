"""``orchestratex eval``: run the same items through several strategies, check the answers, report.

A client of the four services (it never runs inside one): :mod:`.suites` reads the items,
:mod:`.strategies` turns an item into an answer through the services, :mod:`.checkers` (with
:mod:`.sandbox` for code) says whether an answer is right, :mod:`.runner` runs items concurrently,
resumably and within a budget, and :mod:`.report` writes the JSON, Markdown and charts. The record
shapes are in :mod:`.records`; docs/evaluation.md explains how to run it and read the report.
"""
