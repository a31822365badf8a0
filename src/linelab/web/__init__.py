"""The workbench: page views, Jinja2 templates and static assets served by `linelab serve`."""
