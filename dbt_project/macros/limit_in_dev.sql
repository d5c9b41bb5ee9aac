{#-
    Keep dev builds small: in the `dev` target, emit a WHERE clause that keeps only
    the last `days` days of `column` (default: var dev_lookback_days). Any other
    target gets nothing, i.e. the full data set.

        select * from source {{ limit_in_dev('ordered_at') }}
-#}
{% macro limit_in_dev(column, days=none) -%}
    {%- if target.name == 'dev' -%}
        {%- set days = days if days is not none else var('dev_lookback_days', 90) -%}
        where {{ column }} >= {{ dbt.dateadd('day', -1 * (days | int), 'current_date') }}
    {%- endif -%}
{%- endmacro %}
