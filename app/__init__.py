"""RouteLab's Streamlit app (run with ``streamlit run app``)."""
