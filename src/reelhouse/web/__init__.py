"""The browser UI shell: layout, login/logout, static and vendored front-end files, offline API docs.

Core-level: it may import `reelhouse.core`, never a domain. Domains add their own pages (a
router and templates inside the domain) with `runtime.add_pages(PageSet(...))`; the shell
mounts them, builds the navigation from them and renders them inside its layout.
"""
