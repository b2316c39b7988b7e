from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("execution", "0005_edge_lossless_text"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="output_order",
            field=models.TextField(blank=True, default=""),
        ),
    ]
