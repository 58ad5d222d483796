"""Building blocks of the six-site synthetic prostate T2 collection (see :mod:`tools.data.synth`)."""

from .sites import NAMINGS, SITES, SiteSpec, case_file_names, case_numbers, get_site, site_folder

__all__ = ["NAMINGS", "SITES", "SiteSpec", "case_file_names", "case_numbers", "get_site", "site_folder"]
