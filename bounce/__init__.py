"""Returned mail: decode bounces, delay notices, complaints and auto-replies into Reports."""

from bounce.decode import parse
from bounce.report import Kind, Recipient, Report

__all__ = ["Kind", "Recipient", "Report", "parse"]
