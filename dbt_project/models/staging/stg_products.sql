with source as (

    select * from {{ source('raw', 'products') }}

),

renamed as (

    select
        product_id,
        sku,
        product_name,
        category as product_category,
        cast(unit_price_cents / 100.0 as decimal(18, 2)) as unit_price,
        is_active,
        _loaded_at

    from source

)

select * from renamed
