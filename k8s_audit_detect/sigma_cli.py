"""sigma-cli with this project's pipeline types registered (k8s_audit_detect/pipeline_types.py):

    python -m k8s_audit_detect.sigma_cli convert -t eql -p pipelines/elastic_gcp_gke_audit.yml RULE

The same command line as `sigma`; the YAML pipelines name this project's types
(`gke_method_name`, `sigma_regex_whole_value`, `field_name_regex`, `keyed_prefix_mapping`,
`value_type`), which need it (or the installed plugin, which registers them too)."""

from __future__ import annotations


def main() -> None:
    from sigma.cli.main import main as sigma_main

    import k8s_audit_detect.pipeline_types  # noqa: F401  (registers the types)

    sigma_main()


if __name__ == "__main__":
    main()
